"""Serving: a Triton Inference Server model repository from every export, served for real.

``triton_repo``: what a ``config.pbtxt`` holds, derived from an artifact's manifest (platform,
batch and dims, data types, dynamic batching, instance groups), written as a repository entry
``REPO/<name>/config.pbtxt`` + ``REPO/<name>/1/model.onnx|model.plan`` + the manifest, never
half-overwritten, and read back with Triton's own ``ModelConfig`` schema.
``server``: ``twins-serve``, the same models served through PyTriton's bundled ``tritonserver``
(python backend) by the project's Runners, with what that environment needs checked or set
(numpy<2, the interpreter's own libpython) and a clean shutdown on SIGINT/SIGTERM/SIGHUP.
"""
