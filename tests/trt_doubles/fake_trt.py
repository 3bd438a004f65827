"""A TensorRT module double generated from a version's surface (see :mod:`surface`).

The *surface* comes from NVIDIA: which classes, methods, properties, enum members and
module functions exist, and each method's parameter names and required count. The
generated module enforces it the way pybind11 does: an unknown attribute raises
AttributeError, a read-only property refuses assignment, an enum member the version
lacks raises AttributeError, a call that binds to no overload (wrong arity, unknown
keyword, keyword to a positional-only parameter) raises TypeError.

The *behaviour* is ours: the classes below (named after the TensorRT class) record what
is asked and answer with shapes, flags and addresses. They refuse what TensorRT refuses,
per line, from NVIDIA's sources (``PARSER`` and ``BUILDER_SM`` below): an operator or
opset the line's ONNX parser lacks, a GPU architecture the line does not build for, a
plan from another version or GPU, INT8 Q/DQ that is not symmetric signed INT8, a Q/DQ
network under weak typing without ``BuilderFlag.INT8`` (see "INT8" below); ``IHostMemory``
is a buffer, not ``bytes`` (no ``len``, no slicing). A surface method without behaviour
raises NotImplementedError, so a test never passes through something the double does not
model. Behaviour for a name the
version lacks is unreachable: the surface decides what exists.

An execution is enqueued on the fake device's stream (see fake_device) and, when the
stream gets to it, computes the engine's outputs with ONNX Runtime on the ONNX file the
network was parsed from, reading and writing device memory. That makes ordering mistakes
(a copy before the execution, a missing synchronize) visible as wrong numbers; it is
ONNX Runtime's arithmetic, never TensorRT's, and never a timing.

A "plan" built by the double is ``PLAN_MAGIC`` + JSON of what was built; the double's
runtime deserializes only those. It can never be mistaken for a real engine.
"""
from __future__ import annotations

import enum
import inspect
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .fake_device import ALIGN, FakeDevice

PLAN_MAGIC = b"TRT-TEST-DOUBLE-PLAN\x00"
_UNSET = object()

# What each line's ONNX parser takes, by the double's version (major, minor): the newest
# opset and the default-domain ops it has no importer for. Sources: onnx-tensorrt
# docs/operators.md at 8.6-GA (opset <= 17; Gelu, GroupNormalization, Attention absent),
# 10.1 (opset 9-20, Gelu and GroupNormalization added) and 10.15 ("opset 9 to opset 24";
# Attention from 10.14); for 11.x NVIDIA's ONNX opset guide (max opset 25 from 11.5, so 24
# for 11.0-11.4). Kept apart from the project's own table (exporters/trt_ops.py) on purpose:
# a test built on one copy cannot confirm the other.
PARSER = {
    (8, 6): (17, {"Gelu", "GroupNormalization", "Attention", "RMSNormalization", "RotaryEmbedding"}),
    (10, 13): (20, {"Attention", "RMSNormalization", "RotaryEmbedding"}),
    (11, 4): (24, set()),
}
ONNX_DOMAINS = {"", "ai.onnx"}  # anything else needs a plugin, which the double has none of

# -- INT8 ------------------------------------------------------------------------------------------
# What each line refuses around INT8, and where that comes from:
# * the ONNX parser takes symmetric signed INT8 Q/DQ only (onnx-tensorrt QuantDequantLinearHelper,
#   builtin_op_importers.cpp @release/8.6-GA L1157-1230 and onnxOpImporters.cpp @release/10.1-GA
#   L1345-1500; 10.13 and 11.x are taken to say the same as 10.1, the newest tag read): a UINT8
#   DequantizeLinear input or QuantizeLinear zero point is refused by ``notInvalidType`` (below),
#   a non-zero zero point by the "symmetric quantization" assertion, a scale <= 0 by "Scale
#   coefficients must all be positive"; 8.6 also needs the zero point input (10.x defaults to INT8);
# * weak typing (8.6, 10.x without STRONGLY_TYPED): a network with Q/DQ layers does not build
#   without BuilderFlag.INT8 (NVIDIA/TensorRT#4021; the text is TensorRT 8.6's, quoted in NVIDIA's
#   trt-samples-for-hackathon-cn cookbook/02-API/Layer/ConstantLayer/README.md);
# * strong typing (10.x STRONGLY_TYPED, all of 11.x) refuses precision builder flags (BuilderB);
#   11.x has no BuilderFlag.INT8/FP16, no IInt8*Calibrator and no int8_calibrator at all (its
#   surface, from NVIDIA's 11.1 sources, lacks them: the double raises AttributeError);
# * 10.x: ``IBuilderConfig.int8_calibrator`` is deprecated ("Deprecated in TensorRT 10.1. Superseded
#   by explicit quantization.", python/src/infer/pyCore.cpp @v10.13.0 L1782, a DeprecationWarning);
#   the double warns the same way on assignment (the generic property setter records it);
# * a build with BuilderFlag.INT8 and no Q/DQ layer is implicit INT8 (a calibrator, or dynamic
#   ranges). Real TensorRT builds it: with no calibrator it warns "Calibrator is not being used.
#   Users must provide dynamic range for all tensors that are not Int32 or Bool." and "Missing
#   scale and zero-point for tensor ..., expect fall back to non-int8 implementation" and runs
#   those layers in FP16/FP32; with one it calibrates. The double refuses it on every line that
#   has the flag (IMPLICIT_INT8 below, worded as the double's, not TensorRT's): this project
#   quantizes offline with explicit Q/DQ only, and a test must never pass through the implicit path;
# * Q/DQ layers need INT8 hardware (8.6 builds for SM 5.0+): "Networks with QuantizeLayer/
#   DequantizeLayer layers require hardware with Int8 support." (NVIDIA/TensorRT#3157, on a P100,
#   SM 6.0; TensorRT's support matrix lists INT8 from SM 6.1).
QDQ_OPS = {"QuantizeLinear": "QUANTIZE", "DequantizeLinear": "DEQUANTIZE"}
INT8_MIN_SM = (6, 1)
IMPLICIT_INT8 = ("TensorRT test double: BuilderFlag.INT8 is set but the network has no Q/DQ layers: that is implicit "
                 "INT8 calibration (no calibrator / deprecated in 10.1, removed in 11); this project quantizes with "
                 "explicit Q/DQ only")
NO_INT8_FLAG = ("4: [network.cpp::validate::2925] Error Code 4: Internal Error (Int8 precision has been set for a "
                "layer or layer output, but int8 is not configured in the builder)")
# An ONNX node's layer type in the double's network: one layer per node (TensorRT's own graph
# differs: constants, shape arithmetic, fusions). Only QUANTIZE/DEQUANTIZE are relied upon
# (Polygraphy's CreateConfig looks for them to skip calibration, as the builder above does).
LAYER_TYPES = {
    "Conv": "CONVOLUTION", "MatMul": "MATRIX_MULTIPLY", "Gemm": "MATRIX_MULTIPLY", "Softmax": "SOFTMAX",
    "LayerNormalization": "NORMALIZATION", "Concat": "CONCATENATION", "Slice": "SLICE", "Gather": "GATHER",
    "ReduceMean": "REDUCE", "Constant": "CONSTANT", "Shape": "SHAPE", "Cast": "CAST", "Identity": "IDENTITY",
    "Pad": "PADDING", "Where": "SELECT", "Relu": "ACTIVATION", "Sigmoid": "ACTIVATION", "Tanh": "ACTIVATION",
    "Reshape": "SHUFFLE", "Transpose": "SHUFFLE", "Flatten": "SHUFFLE", "Squeeze": "SHUFFLE", "Unsqueeze": "SHUFFLE",
    "Erf": "UNARY", "Sqrt": "UNARY", "Exp": "UNARY", "Abs": "UNARY", "Neg": "UNARY", **QDQ_OPS,
}

# The compute capabilities each line builds and runs for: TensorRT 8.6 support matrix
# (SM 5.0-9.0: Maxwell to Hopper, no Blackwell); 10.5 release notes drop Volta (SM 7.0,
# 7.2), 10.8 adds Blackwell (SM 10.0, 12.0); 11.x (CUDA 13) Turing and newer.
BUILDER_SM = {
    (8, 6): ((5, 0), (9, 0)),
    (10, 13): ((7, 5), (12, 9)),
    (11, 4): ((7, 5), (12, 9)),
}

_SESSIONS: dict[tuple, Any] = {}  # ONNX Runtime sessions by file identity (tests hard-link the same ONNX)


def onnx_session(path: str) -> Any:
    import onnxruntime as ort

    st = Path(path).stat()
    key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    if key not in _SESSIONS:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        _SESSIONS[key] = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return _SESSIONS[key]


class TrtEnum(enum.Enum):
    """A pybind11 enum: int() works, members compare by identity within one enum."""

    def __int__(self) -> int:
        return int(self.value)

    __index__ = __int__

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.value))

    def __str__(self) -> str:
        return f"{type(self).__name__}.{self.name}"


def _signature(params: list[str] | None, required: int | None, positional_only: bool) -> inspect.Signature | None:
    if params is None:
        return None
    kind = inspect.Parameter.POSITIONAL_ONLY if positional_only else inspect.Parameter.POSITIONAL_OR_KEYWORD
    out = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)]
    for i, p in enumerate(params):
        out.append(inspect.Parameter(p, kind, default=inspect.Parameter.empty if i < (required or 0) else _UNSET))
    return inspect.Signature(out)


def _bind(qual: str, overloads: list[dict[str, Any]], self: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The (positional, keyword) arguments of the first overload they bind to."""
    for o in overloads:
        sig = _signature(o["params"], o.get("required"), bool(o.get("positional_only")))
        if sig is None:
            if not kwargs:
                return args, {}
            continue
        try:
            bound = sig.bind(self, *args, **kwargs)
        except TypeError:
            continue
        named = {k: v for k, v in list(bound.arguments.items())[1:]}
        if o.get("positional_only"):
            return tuple(named.values()), {}
        return (), named
    shown = "; ".join(f"({', '.join(o['params'])})" if o["params"] is not None else "(...)" for o in overloads)
    raise TypeError(f"{qual}(): incompatible function arguments {args!r} {kwargs!r}; supported: {shown}")


class Behaviour:
    """Base of the behaviour objects behind generated instances."""

    def __init__(self, mod: FakeTrtModule, **state: Any) -> None:
        self.mod = mod
        self.__dict__.update(state)


class FakeTrtModule(ModuleType):
    """The generated ``tensorrt`` module; ``calls`` records every surface call."""

    def __init__(self, name: str, surface: dict[str, Any], version: str, device: FakeDevice,
                 behaviours: dict[str, type[Behaviour]]) -> None:
        super().__init__(name)
        self.__version__ = version
        self.__file__ = f"<TensorRT {version} test double>"
        self._surface, self._device, self._behaviours = surface, device, behaviours
        self._classes: dict[str, type] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        classes = surface["classes"]
        for qual in sorted(classes, key=lambda q: q.count(".")):
            self._make(qual, classes)
        for qual, spec in classes.items():  # enum members exported onto a class (ILogger.WARNING)
            for member in spec.get("exported") or []:
                for owner in [qual] + spec["bases"]:
                    sub = next((q for q in classes if q.rsplit(".", 1)[0] == owner and member in (classes[q]["enum"] or [])),
                               None)
                    if sub is not None:
                        type.__setattr__(self._classes[qual], member, getattr(self._classes[sub], member))
                        break
            if "Severity" in spec.get("attrs", []):  # the package's __init__.py: Logger.Severity = ILogger.Severity
                for b in spec["bases"]:
                    if f"{b}.Severity" in self._classes:
                        type.__setattr__(self._classes[qual], "Severity", self._classes[f"{b}.Severity"])
        for fname, overloads in surface["functions"].items():
            if fname in ("common_enter", "common_exit", "tensorrt"):
                continue
            setattr(self, fname, self._function(fname, overloads))
        for attr, target in surface["module_attrs"].items():
            if attr == "__version__":
                continue
            if target:
                cls_name, member = target.split(".")
                setattr(self, attr, getattr(self._classes[cls_name], member))

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.__version__.split(".")[:3])

    @property
    def major(self) -> int:
        return self.version_tuple[0]

    def has(self, qual: str, name: str | None = None) -> bool:
        c = self._surface["classes"].get(qual)
        if c is None or name is None:
            return c is not None
        return name in c["methods"] or name in c["properties"] or name in (c["enum"] or [])

    # -- generation ------------------------------------------------------------------------------
    def _make(self, qual: str, classes: dict[str, Any]) -> type:
        if qual in self._classes:
            return self._classes[qual]
        spec = classes[qual]
        short = qual.rsplit(".", 1)[-1]
        inherited = self._inherited_enum(qual, classes)
        if inherited is not None:  # Logger.Severity is ILogger.Severity in the real module: one enum
            cls = self._make(inherited, classes)
            self._classes[qual] = cls
            type.__setattr__(self._classes[qual.rsplit(".", 1)[0]], short, cls)
            return cls
        if spec["enum"] is not None:
            cls: type = TrtEnum(short, [(m, i) for i, m in enumerate(dict.fromkeys(spec["enum"]))])
            cls.__qualname__ = qual
            if "itemsize" in spec.get("attrs", []) + list(spec.get("properties", {})):
                sizes = {"FLOAT": 4, "HALF": 2, "BF16": 2, "INT8": 1, "INT32": 4, "INT64": 8, "BOOL": 1, "UINT8": 1,
                         "FP8": 1, "INT4": 0.5, "FP4": 0.5}
                cls.itemsize = property(lambda self: sizes.get(self.name))  # type: ignore[attr-defined]
        else:
            bases = tuple(self._make(b, classes) for b in spec["bases"] if b in classes) or (
                (bytes,) if short == "IHostMemory" else (object,))
            ns: dict[str, Any] = {"__qualname__": qual, "_surface_spec": spec, "_double": self, "_qual": qual}
            for m, overloads in spec["methods"].items():
                if m != "__del__":  # pybind's doNothingDel: nothing to model
                    ns[m] = self._method(qual, m, overloads)
            for m, overloads in spec["static"].items():
                ns[m] = staticmethod(self._function(f"{qual}.{m}", overloads))
            for p, mode in spec["properties"].items():
                ns[p] = self._property(qual, p, mode)
            ns["__init__"] = self._init(qual, spec["init"])
            if short == "IHostMemory":
                ns["__new__"] = lambda cls, *a, **k: bytes.__new__(cls, k.pop("_data", b""))
            if "__enter__" in spec.get("attrs", []):
                ns["__enter__"] = lambda this: this
                ns["__exit__"] = lambda this, *exc: None
            ns["__setattr__"] = _strict_setattr
            if short == "IHostMemory":
                ns["__getattribute__"] = _surface_only_getattribute
                ns.update(_NOT_BYTES)
            cls = type(short, bases, ns)
        self._classes[qual] = cls
        if "." in qual:
            owner_q, attr = qual.rsplit(".", 1)
            type.__setattr__(self._classes[owner_q], attr, cls)
        else:
            setattr(self, qual, cls)
        return cls

    @staticmethod
    def _inherited_enum(qual: str, classes: dict[str, Any]) -> str | None:
        """The base class's nested enum that ``qual`` re-exports (same name, same members)."""
        if "." not in qual or classes[qual]["enum"] is None:
            return None
        owner, short = qual.rsplit(".", 1)
        for base in classes.get(owner, {}).get("bases", []):
            other = classes.get(f"{base}.{short}")
            if other is not None and sorted(other["enum"] or []) == sorted(classes[qual]["enum"]):
                return f"{base}.{short}"
        return None

    def _behaviour(self, qual: str, **state: Any) -> Behaviour:
        return self._behaviours.get(qual, Behaviour)(self, **state)

    def new(self, qual: str, **state: Any) -> Any:
        """An instance made by TensorRT itself (no Python constructor involved)."""
        cls = self._classes[qual]
        obj = cls.__new__(cls, _data=state.pop("_data", b"")) if qual == "IHostMemory" else object.__new__(cls)
        b = self._behaviour(qual, **state)
        object.__setattr__(obj, "_b", b)
        b.obj = obj
        return obj

    def _init(self, qual: str, overloads: list[dict[str, Any]]) -> Any:
        double = self

        def __init__(this: Any, *args: Any, **kwargs: Any) -> None:
            if not overloads:
                raise TypeError(f"{qual}: No constructor defined!")
            pos, kw = _bind(f"{qual}.__init__", overloads, this, args, kwargs)
            double.calls.append((f"{qual}.__init__", {**kw, **{f"arg{i}": a for i, a in enumerate(pos)}}))
            b = double._behaviour(qual)
            object.__setattr__(this, "_b", b)
            b.obj = this
            init = getattr(type(b), "init", None)
            if init is not None:
                init(b, *pos, **kw)

        return __init__

    def _method(self, qual: str, name: str, overloads: list[dict[str, Any]]) -> Any:
        double = self

        def method(this: Any, *args: Any, **kwargs: Any) -> Any:
            pos, kw = _bind(f"{qual}.{name}", overloads, this, args, kwargs)
            double.calls.append((f"{qual}.{name}", {**kw, **{f"arg{i}": a for i, a in enumerate(pos)}}))
            b = this.__dict__.get("_b") if hasattr(this, "__dict__") else None
            b = b if b is not None else object.__getattribute__(this, "_b")
            impl = getattr(type(b), name, None)
            if impl is None:
                raise NotImplementedError(f"the TensorRT double does not model {qual}.{name}")
            return impl(b, *pos, **kw)

        method.__name__ = name
        return method

    def _function(self, qual: str, overloads: list[dict[str, Any]]) -> Any:
        double = self

        def function(*args: Any, **kwargs: Any) -> Any:
            pos, kw = _bind(qual, overloads, None, args, kwargs)
            double.calls.append((qual, {**kw, **{f"arg{i}": a for i, a in enumerate(pos)}}))
            impl = getattr(ModuleFunctions, qual.replace(".", "__"), None)
            if impl is None:
                raise NotImplementedError(f"the TensorRT double does not model {qual}")
            return impl(double, *pos, **kw)

        function.__name__ = qual
        return function

    @staticmethod
    def _property(qual: str, name: str, mode: str) -> property:
        def fget(this: Any) -> Any:
            if "r" not in mode:
                raise AttributeError(f"{qual}.{name} is write-only")
            b = object.__getattribute__(this, "_b")
            if not hasattr(b, name):
                raise NotImplementedError(f"the TensorRT double does not model {qual}.{name}")
            return getattr(b, name)

        def fset(this: Any, value: Any) -> None:
            if "w" not in mode:
                raise AttributeError(f"can't set attribute {qual}.{name} (read-only)")
            b = object.__getattribute__(this, "_b")
            b.mod.calls.append((f"{qual}.{name}=", {"value": value}))
            setattr(b, name, value)

        return property(fget, fset)


def _strict_setattr(self: Any, name: str, value: Any) -> None:
    """pybind11 objects refuse unknown attributes; Python subclasses of them have a dict."""
    cls = type(self)
    if "_surface_spec" in cls.__dict__ and not isinstance(getattr(cls, name, None), property):
        raise AttributeError(f"'{cls._qual}' object has no attribute '{name}'")
    object.__setattr__(self, name, value)


def _surface_only_getattribute(self: Any, name: str) -> Any:
    """IHostMemory is a ``bytes`` here (for the buffer protocol); hide the bytes methods."""
    if not name.startswith("_") and name not in type(self)._surface_spec["methods"] and \
            name not in type(self)._surface_spec["properties"]:
        raise AttributeError(f"'IHostMemory' object has no attribute '{name}'")
    return object.__getattribute__(self, name)


def _not_a_sequence(name: str) -> Any:
    def refuse(self: Any, *args: Any) -> Any:
        raise TypeError(f"'IHostMemory' object does not support {name} (it is a buffer: use memoryview or bytes())")

    return refuse


# The real IHostMemory offers the buffer protocol and nothing of ``bytes``: len(), indexing,
# slicing, iteration, ``in`` and ``+`` raise TypeError; it is always truthy; equal only to itself.
_NOT_BYTES = {
    "__len__": _not_a_sequence("len()"), "__getitem__": _not_a_sequence("indexing or slicing"),
    "__iter__": _not_a_sequence("iteration"), "__contains__": _not_a_sequence("'in'"),
    "__add__": _not_a_sequence("+"), "__radd__": _not_a_sequence("+"), "__mul__": _not_a_sequence("*"),
    "__bool__": lambda self: True, "__eq__": lambda self, other: self is other, "__ne__": lambda self, other: self is not other,
    "__hash__": object.__hash__,
}


# -- behaviour -----------------------------------------------------------------------------------
def _enum(mod: FakeTrtModule, qual: str) -> type:
    return mod._classes[qual]


class ModuleFunctions:
    @staticmethod
    def init_libnvinfer_plugins(mod: FakeTrtModule, logger: Any = None, namespace: Any = None, *a: Any) -> bool:
        return True

    @staticmethod
    def get_plugin_registry(mod: FakeTrtModule) -> None:
        return None

    @staticmethod
    def volume(mod: FakeTrtModule, iterable: Any) -> int:
        return int(np.prod(list(iterable))) if len(list(iterable)) else 1

    @staticmethod
    def nptype(mod: FakeTrtModule, trt_type: Any) -> type:
        table = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
                 "BOOL": np.bool_, "UINT8": np.uint8}
        if getattr(trt_type, "name", None) in table and isinstance(trt_type, _enum(mod, "DataType")):
            return table[trt_type.name]
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")


ONNX_DTYPES = {1: "FLOAT", 10: "HALF", 7: "INT64", 6: "INT32", 9: "BOOL"}


class ILoggerB(Behaviour):
    def log(self, severity: Any, msg: str) -> None:
        raise NotImplementedError("ILogger.log is pure virtual: subclass ILogger")


class LoggerB(Behaviour):
    def init(self, min_severity: Any = None) -> None:
        self.min_severity = min_severity
        self.messages: list[tuple[Any, str]] = []

    def log(self, severity: Any, msg: str) -> None:
        self.messages.append((severity, msg))


def _log(logger: Any, severity: str, msg: str) -> None:
    if logger is not None:
        logger.log(getattr(type(logger), severity), msg)


class BuilderB(Behaviour):
    def init(self, logger: Any) -> None:
        self.logger = logger
        self.max_DLA_batch_size, self.num_DLA_cores = 1, 0
        self.platform_has_fast_fp16 = True
        self.platform_has_tf32 = True

    def create_network(self, flags: int = 0) -> Any:
        return self.mod.new("INetworkDefinition", flags=int(flags), builder=self.obj)

    def create_builder_config(self) -> Any:
        return self.mod.new("IBuilderConfig", builder=self.obj)

    def create_optimization_profile(self) -> Any:
        return self.mod.new("IOptimizationProfile")

    def build_serialized_network(self, network: Any, config: Any, *extra: Any) -> Any:
        mod = self.mod
        net, cfg = object.__getattribute__(network, "_b"), object.__getattribute__(config, "_b")
        if not net.inputs:
            _log(self.logger, "ERROR", "Network must have at least one output/input")
            return None
        strongly = mod.major >= 11 or net.has_flag("STRONGLY_TYPED")
        weak = [f for f in ("FP16", "BF16", "INT8", "FP8") if f in cfg.flags]
        if strongly and weak:
            _log(self.logger, "ERROR", f"{weak[0]} builder flag is not compatible with a strongly typed network")
            return None
        qdq = net.qdq_layers()
        if qdq and not strongly and "INT8" not in cfg.flags:
            _log(self.logger, "ERROR", NO_INT8_FLAG)
            return None
        if "INT8" in cfg.flags and not qdq:
            calibrator = " (int8_calibrator is set)" if cfg.calibrator is not None else ""
            _log(self.logger, "ERROR", IMPLICIT_INT8 + calibrator)
            return None
        if qdq and tuple(mod._device.compute_capability) < INT8_MIN_SM:
            _log(self.logger, "ERROR", "9: [standardEngineBuilder.cpp::buildEngine::2072] Error Code 9: Internal Error "
                                       "(Networks with QuantizeLayer/DequantizeLayer layers require hardware with Int8 "
                                       "support.)")
            return None
        dynamic = [t for t in net.inputs if any(d == -1 for d in t.shape)]
        profile_names = set().union(*[set(p.shapes) for p in cfg.profiles]) if cfg.profiles else set()
        missing = [t.name for t in dynamic if t.name not in profile_names]
        if missing:
            _log(self.logger, "ERROR", f"Network has dynamic or shape inputs, but no optimization profile for {missing}")
            return None
        gpu = mod._device
        lo, hi = BUILDER_SM[mod.version_tuple[:2]]
        if not lo <= tuple(gpu.compute_capability) <= hi:
            cc = "".join(map(str, gpu.compute_capability))
            _log(self.logger, "ERROR", f"1: [caskBuilderUtils.cpp::trtSmToCask] Error Code 1: Internal Error "
                                       f"(Unsupported SM: 0x{cc})")
            return None
        plan = {
            "version": mod.__version__, "network_flags": sorted(net.flag_names()), "builder_flags": sorted(cfg.flags),
            "strongly_typed": strongly, "memory_pools": {k: v for k, v in cfg.pools.items()},
            "opt_level": cfg.builder_optimization_level,
            "hardware_compatibility_level": getattr(cfg.hardware_compatibility_level, "name", None),
            "compute_capability": list(gpu.compute_capability),
            "inputs": [t.describe() for t in net.inputs], "outputs": [t.describe() for t in net.outputs],
            "profiles": [{k: [list(s) for s in v] for k, v in p.shapes.items()} for p in cfg.profiles],
            "timing_cache": cfg.timing_cache is not None,
            "onnx": net.onnx_path,
            "qdq_layers": qdq, "int8_calibrator": cfg.calibrator is not None,
        }
        if cfg.timing_cache is not None:
            cache = object.__getattribute__(cfg.timing_cache, "_b")
            cache.entries.add(f"{mod.__version__}/sm{gpu.compute_capability[0]}{gpu.compute_capability[1]}/"
                              f"{json.dumps(plan['inputs'], sort_keys=True)}")
        return mod.new("IHostMemory", _data=PLAN_MAGIC + json.dumps(plan, sort_keys=True).encode())


class INetworkDefinitionB(Behaviour):
    def init(self) -> None:  # networks come from Builder.create_network only
        raise TypeError("INetworkDefinition: No constructor defined!")

    def __init__(self, mod: FakeTrtModule, **state: Any) -> None:
        super().__init__(mod, **state)
        self.inputs: list[TensorB] = []
        self.outputs: list[TensorB] = []
        self.name = "network"
        self.layers: list[ILayerB] = []  # one per ONNX node (see LAYER_TYPES)
        self.onnx_path: str | None = None  # the file the parser read: the double's engines compute with it

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def qdq_layers(self) -> int:
        return sum(layer.type.name in QDQ_OPS.values() for layer in self.layers)

    def flag_names(self) -> set[str]:
        enum_cls = _enum(self.mod, "NetworkDefinitionCreationFlag")
        return {m.name for m in enum_cls if self.flags & (1 << int(m))}

    def has_flag(self, name: str) -> bool:
        return name in self.flag_names()

    def get_flag(self, flag: Any) -> bool:
        return bool(self.flags & (1 << int(flag)))

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_input(self, index: int) -> Any:
        return self.inputs[index].obj

    def get_output(self, index: int) -> Any:
        return self.outputs[index].obj

    def get_layer(self, index: int) -> Any:
        if not 0 <= int(index) < len(self.layers):
            return None
        return self.layers[int(index)].obj

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Any:
        if not 0 <= int(index) < len(self.layers):  # the bindings raise IndexError past the end
            raise IndexError(index)
        return self.layers[int(index)].obj


class ILayerB(Behaviour):
    """A layer: its name, type and arity (no tensors: nothing in the double reads them); no
    per-layer precision is ever set (the project sets none; Polygraphy reads it)."""

    precision_is_set = False

    def output_type_is_set(self, index: int) -> bool:
        return False

    @property
    def precision(self) -> Any:
        return _enum(self.mod, "DataType").FLOAT


class TensorB(Behaviour):
    """An ITensor: name, shape (-1 for a dynamic dimension, symbols kept aside), dtype."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.symbolic), "dtype": self.dtype.name}

    @property
    def is_shape_tensor(self) -> bool:
        return False

    @property
    def is_execution_tensor(self) -> bool:
        return True

    @property
    def is_network_input(self) -> bool:
        return self.kind == "input"

    @property
    def is_network_output(self) -> bool:
        return self.kind == "output"


class OnnxParserB(Behaviour):
    def init(self, network: Any, logger: Any) -> None:
        self.network, self.logger, self.errors = network, logger, []
        self.flags = 0

    def _fail(self, desc: str) -> bool:
        self.errors.append(self.mod.new("ParserError", desc_text=desc, node_index=-1, name="", op=""))
        return False

    def parse_from_file(self, model: str) -> bool:
        import onnx

        path = Path(model)
        if not path.is_file():
            return self._fail(f"Failed to open file: {model}")
        return self._parse(onnx.load(str(path), load_external_data=False), str(path.resolve()))

    def parse(self, model: Any, path: Any = None) -> bool:
        import onnx

        return self._parse(onnx.load_from_string(bytes(model)), str(path) if path else None)

    def _parse(self, model: Any, path: str | None) -> bool:
        net = object.__getattribute__(self.network, "_b")
        if self.mod.major < 10 and not net.has_flag("EXPLICIT_BATCH"):
            return self._fail("Network must have explicit batch dimension (create it with EXPLICIT_BATCH)")
        max_opset, absent = PARSER[self.mod.version_tuple[:2]]
        opset = max((o.version for o in model.opset_import if o.domain in ONNX_DOMAINS), default=0)
        if opset > max_opset:
            return self._fail(f"Unsupported ONNX opset {opset}: TensorRT {self.mod.__version__} parses opsets up "
                              f"to {max_opset}")
        for i, node in enumerate(model.graph.node):
            if node.domain not in ONNX_DOMAINS or node.op_type in absent:
                self.errors.append(self.mod.new(
                    "ParserError", desc_text=f"No importer registered for op: {node.op_type}", node_index=i,
                    name=node.name, op=node.op_type))
                return False
        qdq = _QdqChecker(model, self.mod.major)
        layer_types = _enum(self.mod, "LayerType")
        for i, node in enumerate(model.graph.node):
            if node.op_type in QDQ_OPS:
                refusal = qdq.refusal(node)
                if refusal is not None:
                    desc, code = refusal
                    self.errors.append(self.mod.new("ParserError", desc_text=desc, node_index=i, name=node.name,
                                                    op=node.op_type, error_code=code))
                    return False
            kind = getattr(layer_types, LAYER_TYPES.get(node.op_type, "ELEMENTWISE"), None) or layer_types.ELEMENTWISE
            cls = {"QUANTIZE": "IQuantizeLayer", "DEQUANTIZE": "IDequantizeLayer"}.get(kind.name, "ILayer")
            layer = self.mod.new(cls, name=node.name or f"(Unnamed Layer* {i}) [{node.op_type}]", type=kind,
                                 num_inputs=len(node.input), num_outputs=len(node.output))
            net.layers.append(object.__getattribute__(layer, "_b"))
        net.onnx_path = path
        inits = {i.name for i in model.graph.initializer}
        for kind, values in (("input", [v for v in model.graph.input if v.name not in inits]),
                             ("output", list(model.graph.output))):
            for v in values:
                tt = v.type.tensor_type
                symbolic = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
                dtype = getattr(_enum(self.mod, "DataType"), ONNX_DTYPES[tt.elem_type])
                t = self.mod.new("ITensor", name=v.name, symbolic=symbolic, dtype=dtype, kind=kind,
                                 shape=tuple(d if isinstance(d, int) else -1 for d in symbolic))
                (net.inputs if kind == "input" else net.outputs).append(object.__getattribute__(t, "_b"))
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> Any:
        return self.errors[index]

    def clear_errors(self) -> None:
        self.errors.clear()

    def clear_flag(self, flag: Any) -> None:
        self.flags &= ~(1 << int(flag))

    def set_flag(self, flag: Any) -> None:
        self.flags |= 1 << int(flag)

    def get_flag(self, flag: Any) -> bool:
        return bool(self.flags & (1 << int(flag)))

    def set_builder_config(self, builder_config: Any) -> bool:
        return True


class ParserErrorB(Behaviour):
    def desc(self) -> str:
        return self.desc_text

    def node(self) -> int:
        return self.node_index

    def node_name(self) -> str:
        return self.name

    def node_operator(self) -> str:
        return self.op

    def code(self) -> Any:
        return getattr(_enum(self.mod, "ErrorCode"), getattr(self, "error_code", "UNSUPPORTED_NODE"))

    def func(self) -> str:
        return "parse"

    def __str__(self) -> str:
        return self.desc_text


class _QdqChecker:
    """What onnx-tensorrt's QuantDequantLinearHelper refuses (see "INT8" at the top): the
    element type of each Q/DQ input as TensorRT sees it (an initializer's or Constant's ONNX
    type; a QuantizeLinear's output is INT8, the only type the importer gives an accepted Q
    layer) and the values of constant scales and zero points."""

    def __init__(self, model: Any, major: int) -> None:
        from onnx import TensorProto

        self.major = major
        self.consts: dict[str, Any] = {i.name: i for i in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value":
                        self.consts[node.output[0]] = a.t
        self.types: dict[str, int] = {name: t.data_type for name, t in self.consts.items()}
        for node in model.graph.node:
            if node.op_type == "QuantizeLinear":  # refused below unless INT8 (a UINT8 zero point is)
                self.types[node.output[0]] = TensorProto.INT8

    def _type_name(self, name: str) -> str | None:
        from onnx import TensorProto

        t = self.types.get(name)
        return TensorProto.DataType.Name(t) if t is not None else None

    def _values(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        t = self.consts.get(name)
        return numpy_helper.to_array(t) if t is not None else None

    def refusal(self, node: Any) -> tuple[str, str] | None:
        invalid = "Found invalid input type of UINT8" if self.major < 10 else "Found unsupported input type of UINT8"
        inputs = list(node.input)
        if self._type_name(inputs[0]) == "UINT8":
            return invalid, "UNSUPPORTED_NODE"
        zp = inputs[2] if len(inputs) > 2 and inputs[2] else None
        if node.op_type == "QuantizeLinear" and zp and self._type_name(zp) == "UINT8":
            return invalid, "UNSUPPORTED_NODE"
        if len(inputs) < 2:
            return ("This version of TensorRT requires at least 2 inputs for the QuantizeLinear/DequantizeLinear "
                    "operator.", "INVALID_NODE")
        scale = self._values(inputs[1])
        if scale is not None and not (scale.size and np.all(scale.astype(np.float32) > 0)):
            return "Scale coefficients must all be positive", "INVALID_NODE"
        if zp is None:
            if self.major < 10:
                return ("This version of TensorRT requires 3 inputs for the INT8 QuantizeLinear/DequantizeLinear "
                        "operator.", "INVALID_NODE")
            return None  # 10.x: INT8 by default
        values = self._values(zp)
        if values is not None and np.any(values != 0):
            return ("TensorRT only supports symmetric quantization. The zero point for the QuantizeLinear/"
                    "DequantizeLinear operator must be all zeros.", "INVALID_NODE")
        return None


class IBuilderConfigB(Behaviour):
    def __init__(self, mod: FakeTrtModule, **state: Any) -> None:
        super().__init__(mod, **state)
        self.flags = {"TF32"}  # TensorRT enables TF32 by default
        self.pools: dict[str, int] = {}
        self.profiles: list[Any] = []
        self.timing_cache: Any = None
        self.builder_optimization_level = 3
        self.hardware_compatibility_level = _enum(mod, "HardwareCompatibilityLevel").NONE
        self.profiling_verbosity = _enum(mod, "ProfilingVerbosity").LAYER_NAMES_ONLY
        self.DLA_core = -1
        self.default_device_type = _enum(mod, "DeviceType").GPU
        self.engine_capability = list(_enum(mod, "EngineCapability"))[0]
        self.avg_timing_iterations = 1
        self.calibrator: Any = None  # int8_calibrator (8.6, 10.x; 11.x has none)
        self.max_aux_streams = -1

    @property
    def int8_calibrator(self) -> Any:
        return self.calibrator

    @int8_calibrator.setter
    def int8_calibrator(self, value: Any) -> None:
        if self.mod.major == 10:  # the 10.x bindings' deprecateMember (pyCore.cpp @v10.13.0 L1782)
            import warnings

            warnings.warn("Use Deprecated in TensorRT 10.1. Superseded by explicit quantization. instead.",
                          DeprecationWarning, stacklevel=3)
        self.calibrator = value

    def set_flag(self, flag: Any) -> None:
        self.flags.add(flag.name)

    def clear_flag(self, flag: Any) -> None:
        self.flags.discard(flag.name)

    def get_flag(self, flag: Any) -> bool:
        return flag.name in self.flags

    def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
        if int(pool_size) < 0:
            raise ValueError("pool_size must be >= 0")
        self.pools[pool.name] = int(pool_size)

    def get_memory_pool_limit(self, pool: Any) -> int:
        return self.pools.get(pool.name, 0)

    def add_optimization_profile(self, profile: Any) -> int:
        b = object.__getattribute__(profile, "_b")
        if not b.shapes:
            return -1
        self.profiles.append(b)
        return len(self.profiles) - 1

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.profiles)

    def get_tactic_sources(self) -> int:
        return 0

    def get_preview_feature(self, feature: Any) -> bool:
        return False

    def get_quantization_flag(self, flag: Any) -> bool:
        return False

    def create_timing_cache(self, serialized_timing_cache: Any) -> Any:
        blob = bytes(serialized_timing_cache)
        entries: set[str] = set()
        version = self.mod.__version__
        if blob:
            try:
                data = json.loads(blob)
                entries, version = set(data["entries"]), data["version"]
            except (ValueError, KeyError):
                return None
        return self.mod.new("ITimingCache", entries=entries, version=version)

    def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
        b = object.__getattribute__(cache, "_b")
        if b.version != self.mod.__version__:
            if not ignore_mismatch:
                return False
            b.entries, b.version = set(), self.mod.__version__
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> Any:
        return self.timing_cache


class IOptimizationProfileB(Behaviour):
    def __init__(self, mod: FakeTrtModule, **state: Any) -> None:
        super().__init__(mod, **state)
        self.shapes: dict[str, tuple] = {}
        self.extra_memory_target = 1.0

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
        shapes = tuple(tuple(int(d) for d in s) for s in (min, opt, max))
        if len({len(s) for s in shapes}) != 1 or any(
                not lo <= o <= hi for lo, o, hi in zip(*shapes)):
            raise RuntimeError("Shape provided for min is inconsistent with other shapes.")
        self.shapes[input] = shapes

    def get_shape(self, input: str) -> list:
        return list(self.shapes.get(input, ()))

    def __bool__(self) -> bool:
        return bool(self.shapes)

    __nonzero__ = __bool__


class ITimingCacheB(Behaviour):
    def serialize(self) -> Any:
        return self.mod.new("IHostMemory", _data=json.dumps({"version": self.version,
                                                              "entries": sorted(self.entries)}).encode())

    def combine(self, input_cache: Any, ignore_mismatch: bool) -> bool:
        other = object.__getattribute__(input_cache, "_b")
        if other.version != self.version and not ignore_mismatch:
            return False
        if other.version == self.version:
            self.entries |= other.entries
        return True

    def reset(self) -> bool:
        self.entries.clear()
        return True


class IHostMemoryB(Behaviour):
    @property
    def nbytes(self) -> int:
        return len(bytes(self.obj))

    @property
    def dtype(self) -> Any:
        return _enum(self.mod, "DataType").UINT8


class RuntimeB(Behaviour):
    def init(self, logger: Any) -> None:
        self.logger = logger
        self.engine_host_code_allowed = False
        self.DLA_core = -1
        self.max_threads = 1

    def deserialize_cuda_engine(self, serialized_engine: Any) -> Any:
        data = bytes(serialized_engine)
        if not data.startswith(PLAN_MAGIC):
            _log(self.logger, "ERROR", "1: [stdArchiveReader.cpp::StdArchiveReader] Error Code 1: Serialization "
                                       "(Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match)")
            return None
        plan = json.loads(data[len(PLAN_MAGIC):])
        mod = self.mod
        vc = "VERSION_COMPATIBLE" in plan["builder_flags"]
        if plan["version"] != mod.__version__ and not vc:
            _log(self.logger, "ERROR", f"The engine plan file is not compatible with this version of TensorRT, "
                                       f"expecting library version {mod.__version__} got {plan['version']}")
            return None
        if vc and not self.engine_host_code_allowed:
            _log(self.logger, "ERROR", "Engine host code is not allowed: set Runtime.engine_host_code_allowed")
            return None
        cc = list(mod._device.compute_capability)
        level = plan["hardware_compatibility_level"]
        if (level == "AMPERE_PLUS" and cc[0] < 8) or (level in (None, "NONE") and cc != plan["compute_capability"]):
            _log(self.logger, "ERROR", "The engine plan file is generated on an incompatible device")
            return None
        return mod.new("ICudaEngine", plan=plan, logger=self.logger)


class ICudaEngineB(Behaviour):
    def _tensors(self) -> list[dict[str, Any]]:
        return [dict(t, mode="INPUT") for t in self.plan["inputs"]] + [dict(t, mode="OUTPUT")
                                                                      for t in self.plan["outputs"]]

    @property
    def num_io_tensors(self) -> int:
        return len(self._tensors())

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.plan["profiles"])

    @property
    def name(self) -> str:
        return "double-engine"

    def get_tensor_name(self, index: int) -> str:
        return self._tensors()[index]["name"]

    def _tensor(self, name: str) -> dict[str, Any]:
        for t in self._tensors():
            if t["name"] == name:
                return t
        raise RuntimeError(f"no tensor named {name}")

    def get_tensor_mode(self, name: str) -> Any:
        enum_cls = _enum(self.mod, "TensorIOMode")
        try:
            return getattr(enum_cls, self._tensor(name)["mode"])
        except RuntimeError:
            return enum_cls.NONE

    def get_tensor_dtype(self, name: str) -> Any:
        return getattr(_enum(self.mod, "DataType"), self._tensor(name)["dtype"])

    def get_tensor_shape(self, name: str) -> tuple:
        return tuple(d if isinstance(d, int) else -1 for d in self._tensor(name)["shape"])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list:
        profiles = self.plan["profiles"]
        if not 0 <= int(profile_index) < len(profiles) or name not in profiles[int(profile_index)]:
            # TensorRT logs the bad index and answers invalid dimensions
            _log(getattr(self, "logger", None), "ERROR", f"3: [engine.cpp::getProfileShape] Error Code 3: API Usage "
                                                        f"Error (profileIndex {profile_index} out of range)")
            return []
        return [tuple(s) for s in profiles[int(profile_index)][name]]

    def compute(self, io: dict[str, tuple[int, tuple[int, ...], str]]) -> None:
        """The execution, when its stream gets to it: inputs read from device memory, outputs
        written there, computed by ONNX Runtime on the ONNX file the plan was parsed from."""
        dev = self.mod._device
        dtypes = {"FLOAT": np.float32, "HALF": np.float16}
        path = self.plan.get("onnx")
        if path is None:
            raise RuntimeError("this plan records no ONNX file: the double cannot compute its outputs")
        feeds = {}
        for t in self.plan["inputs"]:
            addr, shape, dtype = io[t["name"]]
            nbytes = int(np.prod(shape)) * np.dtype(dtypes[dtype]).itemsize
            feeds[t["name"]] = np.frombuffer(dev.read(addr, nbytes), dtypes[dtype]).reshape(shape)
        names = [t["name"] for t in self.plan["outputs"]]
        for name, value in zip(names, onnx_session(path).run(names, feeds)):
            addr, shape, dtype = io[name]
            dev.write(addr, np.ascontiguousarray(value, dtype=dtypes[dtype]).tobytes())

    def create_execution_context(self, *args: Any, **kwargs: Any) -> Any:
        return self.mod.new("IExecutionContext", engine_b=self)


class IExecutionContextB(Behaviour):
    def __init__(self, mod: FakeTrtModule, **state: Any) -> None:
        super().__init__(mod, **state)
        self.input_shapes: dict[str, tuple] = {}
        self.addresses: dict[str, int] = {}
        self.name = "context"
        self.debug_sync = False
        self.initialized_for: dict[str, tuple] | None = None  # the input shapes of the last plain enqueue

    @property
    def engine(self) -> Any:
        return self.engine_b.obj

    def set_input_shape(self, name: str, shape: Any) -> bool:
        e = self.engine_b
        shape = tuple(int(d) for d in shape)
        if e.get_tensor_mode(name).name != "INPUT":
            return False
        lo, _, hi = e.plan["profiles"][0][name]
        if len(shape) != len(lo) or any(not a <= s <= b for s, a, b in zip(shape, lo, hi)):
            return False
        self.input_shapes[name] = shape
        return True

    def _symbols(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.engine_b.plan["inputs"]:
            shape = self.input_shapes.get(t["name"])
            if shape is not None:
                out.update({d: s for d, s in zip(t["shape"], shape) if isinstance(d, str)})
        return out

    def get_tensor_shape(self, name: str) -> tuple:
        t = self.engine_b._tensor(name)
        if t["mode"] == "INPUT" and name in self.input_shapes:
            return self.input_shapes[name]
        sym = self._symbols()
        return tuple(d if isinstance(d, int) else sym.get(d, -1) for d in t["shape"])

    def infer_shapes(self) -> list[str]:
        return [t["name"] for t in self.engine_b.plan["inputs"] if t["name"] not in self.input_shapes]

    def set_tensor_address(self, name: str, memory: int) -> bool:
        memory = int(memory)
        if self.engine_b.get_tensor_mode(name).name == "NONE" or memory % ALIGN:
            return False  # TensorRT: unknown name, or an address not 256-byte aligned
        self.addresses[name] = memory
        return True

    def get_tensor_address(self, name: str) -> int:
        return self.addresses.get(name, 0)

    def execute_async_v3(self, stream_handle: int) -> bool:
        e, dev = self.engine_b, self.mod._device
        record: dict[str, Any] = {"stream": int(stream_handle), "shapes": {}, "addresses": {}}
        stream = int(stream_handle)
        if stream not in dev.streams and stream not in getattr(dev, "torch_streams", set()):
            return False
        io: dict[str, tuple[int, tuple[int, ...], str]] = {}
        for t in e._tensors():
            shape = self.get_tensor_shape(t["name"])
            addr = self.addresses.get(t["name"])
            if addr is None or any(d < 0 for d in shape):
                return False
            nbytes = int(np.prod(shape)) * {"FLOAT": 4, "HALF": 2}.get(t["dtype"], 4)
            if dev.device_span(addr, nbytes) is None:
                return False  # an address that is not (or no longer) device memory of that size
            record["shapes"][t["name"]] = shape
            record["addresses"][t["name"]] = (addr, nbytes)
            io[t["name"]] = (addr, shape, t["dtype"])
        capture = dev.captures.get(stream)
        if capture is not None and self.initialized_for != self.input_shapes:
            # The first enqueue for a set of shapes does TensorRT's lazy, shape-dependent set-up
            # (allocations, a synchronize), which a capturing stream does not allow: trtexec and
            # NVIDIA's demos enqueue once outside the capture first.
            capture.invalidated = True
            _log(getattr(e, "logger", None), "ERROR", "1: [runner.cpp::execute] Error Code 1: Cuda Runtime (operation "
                                                      "not permitted when stream is capturing)")
            return False
        if capture is None:
            self.initialized_for = dict(self.input_shapes)
        return dev.enqueue(stream, record, lambda: e.compute(io))


BEHAVIOURS: dict[str, type[Behaviour]] = {
    "ILogger": ILoggerB, "Logger": LoggerB, "Builder": BuilderB, "INetworkDefinition": INetworkDefinitionB,
    "ITensor": TensorB, "ILayer": ILayerB, "IQuantizeLayer": ILayerB, "IDequantizeLayer": ILayerB,
    "OnnxParser": OnnxParserB, "ParserError": ParserErrorB, "IBuilderConfig": IBuilderConfigB,
    "IOptimizationProfile": IOptimizationProfileB, "ITimingCache": ITimingCacheB, "IHostMemory": IHostMemoryB,
    "Runtime": RuntimeB, "ICudaEngine": ICudaEngineB, "IExecutionContext": IExecutionContextB,
}


def make_tensorrt(surface: dict[str, Any], version: str, device: FakeDevice, name: str = "tensorrt") -> FakeTrtModule:
    return FakeTrtModule(name, surface, version, device, BEHAVIOURS)


def read_plan(data: bytes) -> dict[str, Any]:
    """What a double-built plan says it is (for assertions)."""
    assert data.startswith(PLAN_MAGIC), "not a plan built by the TensorRT double"
    return json.loads(data[len(PLAN_MAGIC):])
