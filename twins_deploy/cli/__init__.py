"""The console scripts: argument parsing only; each turns flags into typed requests for
:mod:`twins_deploy.pipeline` or :mod:`twins_deploy.bench` and prints the outcome."""
