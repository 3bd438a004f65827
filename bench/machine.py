"""Facts about the machine a measurement ran on (recorded with every result), and how busy
it was: the load average before and after, and the CPU time other processes took during the
run. A benchmark on a busy machine says so (stderr, and in its results); the rule is
:func:`busy_reasons` (docs/benchmarks.md spells it out)."""
from __future__ import annotations

import os
import platform
import resource
import time
from typing import Any

import torch

# The instruction-set flags that decide CPU inference speed (and whether native BF16 exists).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
# the instructions that make INT8 dot products fast (VPDPBUSD and AMX); without them ONNX
# Runtime and OpenVINO still run INT8, slower, and U8S8 products may saturate (ORT's docs)
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """Which of :data:`CPU_FLAGS` this CPU has (empty where /proc/cpuinfo is not readable)."""
    flags = (_cpuinfo_field("flags") or "").split()
    return [f for f in CPU_FLAGS if f in flags]


def int8_cpu_warning(flags: list[str] | None = None) -> str | None:
    """A warning when this CPU lacks VNNI/AMX INT8 instructions (``flags``: the CPU's, by
    default read here): INT8 runs, but slower than on a CPU that has them, and less exactly:
    without VNNI the u8 x s8 products are summed with a saturating 16-bit add (vpmaddubsw),
    which full-range INT8 weights overflow (svt_t on the digits: cosine 0.97-0.99 against FP32
    on an AVX2-only EPYC, 0.9996 with VNNI). None otherwise, and where the flags cannot be read."""
    flags = cpu_flags() if flags is None else flags
    if not flags or any(f in flags for f in INT8_DOT_FLAGS):
        return None
    return (f"warning: this CPU has none of {', '.join(INT8_DOT_FLAGS)}: the INT8 routes run, but slower than on a "
            "CPU with VNNI, and less accurately (their 16-bit sums saturate; validation measures how much): "
            "measure before deploying INT8 here")


def machine_info() -> dict[str, Any]:
    """CPU, its flags, cores, and (when torch sees one) the GPU, its compute capability and driver."""
    info: dict[str, Any] = {"cpu": cpu_name(), "cores": os.cpu_count(), "cpu_flags": cpu_flags(),
                            "platform": platform.platform(), "gpu": None}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": p.name, "compute_capability": f"{p.major}.{p.minor}",
                       "memory_gib": round(p.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    return info


# A machine counts as busy (the run warns, and its results say so) when, before the run, the
# 1-minute load average exceeds BUSY_LOAD_PER_CPU per CPU while other processes are still
# using more than BUSY_OTHERS_SHARE of its CPUs (the average lags: the export a user ran just
# before a benchmark raises it for a minute after it has ended), or when, during the run,
# other processes took more than BUSY_OTHERS_SHARE of the machine's CPU time.
BUSY_LOAD_PER_CPU = 0.5
BUSY_OTHERS_SHARE = 0.1
START_SAMPLE_S = 0.3  # how long other processes' CPU use is sampled as a run starts
BUSY_RULE = (f"busy when the 1-min load average before the run exceeds {BUSY_LOAD_PER_CPU} per CPU while other "
             f"processes still use more than {BUSY_OTHERS_SHARE:.0%} of the CPUs, or other processes took more "
             f"than {BUSY_OTHERS_SHARE:.0%} of the machine's CPU time during it")


def loadavg() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages, None where the system has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def system_cpu_seconds() -> tuple[float, int] | None:
    """CPU seconds every process on the machine has used since boot (user, nice, system, irq,
    softirq and steal time of /proc/stat: steal is time a hypervisor gave another machine),
    and the number of CPUs that line covers; None where /proc/stat is not readable."""
    try:
        with open("/proc/stat") as f:
            lines = f.read(1 << 16).splitlines()
        fields = [int(v) for v in lines[0].split()[1:]]
        cpus = sum(1 for line in lines[1:] if line.startswith("cpu") and line[3:4].isdigit())
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"), max(cpus, 1)
    except (OSError, ValueError, IndexError):
        return None


def own_cpu_seconds() -> float:
    """CPU seconds this process (every thread) and the children it waited for have used."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def others_now(window_s: float = START_SAMPLE_S) -> float | None:
    """The CPUs other processes use right now (1.0: one CPU busy), sampled over ``window_s``;
    None where the machine's CPU time cannot be read."""
    t0, own0, sys0 = time.monotonic(), own_cpu_seconds(), system_cpu_seconds()
    time.sleep(window_s)
    sys1 = system_cpu_seconds()
    if sys0 is None or sys1 is None:
        return None
    wall = time.monotonic() - t0
    return round(max(0.0, (sys1[0] - sys0[0] - (own_cpu_seconds() - own0)) / wall), 2)


def load_start() -> dict[str, Any]:
    """The machine's load as a run starts (what :func:`load_end` compares against)."""
    return {"cpu_count": os.cpu_count(), "loadavg_start": loadavg(), "other_cpus_at_start": others_now(),
            "loadavg_end": None, "_t": time.monotonic(), "_system": system_cpu_seconds(), "_own": own_cpu_seconds()}


def load_end(start: dict[str, Any]) -> dict[str, Any]:
    """The load record of a run, for its results: the load averages (1, 5, 15 min) at start
    and end, the CPUs, and over the run's wall time the CPU this process and other processes
    used (in CPUs: 1.0 is one CPU busy the whole time), whether that makes the machine busy
    (:data:`BUSY_RULE`) and why."""
    wall = time.monotonic() - start["_t"]
    own = own_cpu_seconds() - start["_own"]
    system, before = system_cpu_seconds(), start["_system"]
    others = None
    if system is not None and before is not None and wall > 0:
        others = max(0.0, (system[0] - before[0] - own) / wall)
    record = {"cpu_count": start["cpu_count"], "loadavg_start": start["loadavg_start"],
              "other_cpus_at_start": start.get("other_cpus_at_start"), "loadavg_end": loadavg(),
              "wall_s": round(wall, 2), "own_cpus": round(own / wall, 2) if wall > 0 else None,
              "other_cpus": round(others, 2) if others is not None else None,
              "other_cpus_of": system[1] if system is not None else None, "rule": BUSY_RULE}
    record["busy_reasons"] = busy_reasons(record)
    record["busy"] = bool(record["busy_reasons"])
    return record


def public(load: dict[str, Any]) -> dict[str, Any]:
    """``load`` without the private counters :func:`load_start` keeps for :func:`load_end`."""
    return {k: v for k, v in load.items() if not k.startswith("_")}


def busy_reasons(load: dict[str, Any]) -> list[str]:
    """Why the machine counts as busy under :data:`BUSY_RULE` (none: it was quiet, or nothing
    could be measured); ``load`` as :func:`load_start` or :func:`load_end` give it."""
    reasons = []
    cpus = load.get("cpu_count") or 1
    avg, now = load.get("loadavg_start"), load.get("other_cpus_at_start")
    if avg and avg[0] > BUSY_LOAD_PER_CPU * cpus and (now is None or now > BUSY_OTHERS_SHARE * cpus):
        still = f", and other processes were using {now:.2f} CPUs as it started" if now is not None else ""
        reasons.append(f"the 1-min load average was {avg[0]:.2f} on {cpus} CPUs before the run "
                       f"(more than {BUSY_LOAD_PER_CPU} per CPU){still}")
    others, of = load.get("other_cpus"), load.get("other_cpus_of") or cpus
    if others is not None and others > BUSY_OTHERS_SHARE * of:
        reasons.append(f"other processes used {others:.2f} of {of} CPUs on average during the run "
                       f"(more than {BUSY_OTHERS_SHARE:.0%})")
    return reasons


def busy_warning(reasons: list[str]) -> str:
    """The warning line for a busy machine."""
    return (f"warning: the machine was busy: {'; '.join(reasons)}. Throughput varies with other work: measure on "
            "an idle machine to compare numbers (the load is recorded with the results)")


def load_line(load: dict[str, Any] | None) -> str | None:
    """One line for a report: the load averages, other processes' CPU, and the verdict."""
    if not load:
        return None
    start, end = load.get("loadavg_start"), load.get("loadavg_end")
    parts = [f"1-min load average {start[0] if start else '-'} at start, {end[0] if end else '-'} at end "
             f"on {load.get('cpu_count')} CPUs"]
    if load.get("other_cpus") is not None:
        parts.append(f"other processes {load['other_cpus']} CPUs on average during the run "
                     f"(this run {load.get('own_cpus')})")
    verdict = ("**busy**: " + "; ".join(load["busy_reasons"])) if load.get("busy") else (
        "quiet" if "busy" in load else "the run did not finish")
    return f"- machine load: {', '.join(parts)}: {verdict}"
