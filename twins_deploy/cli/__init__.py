"""Console scripts: twins-export, twins-inspect, twins-validate, twins-bench."""
