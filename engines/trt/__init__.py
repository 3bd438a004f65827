"""Building TensorRT plans for 8.6, 10.x and 11.x: ``env`` finds TensorRT and the GPU,
``options`` and ``profile`` describe a build, ``build`` runs it, ``trtexec`` writes the
equivalent command line, ``compat`` decides whether a plan runs here, ``cuda`` wraps the
CUDA runtime calls the TensorRT runner needs. TensorRT itself is imported only inside
the functions that use it."""
