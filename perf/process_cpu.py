"""Where a host's CPU time goes during a measurement: Triton's server, its Python-backend stubs, the load
generator (perf_analyzer) and everything else, in cores and in CPU microseconds per inference, with the minor page
faults each group took (a fault is a fresh page's first touch; on a virtual machine each costs microseconds).

A GPU server that serves files can be held back by its host: the CUDA decoders' Huffman stage, the Python
stubs and perf_analyzer itself all run on the same cores. Splitting the host's busy time by process says
which of them a higher number would have to come from.
"""
from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

# /proc/<pid>/stat's comm is cut to 15 characters: "triton_python_backend_stub" reads "triton_python_b".
ROLES = (("tritonserver", "tritonserver"), ("triton_python_b", "Python-backend stubs"))
LOAD_GENERATOR = "perf_analyzer (load generator)"
OTHER = "other processes"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def role_of(comm: str) -> str:
    """The group a process of this name is counted in."""
    return next((role for prefix, role in ROLES if comm.startswith(prefix)), OTHER)


def _process_times(proc: Path) -> dict[tuple[int, int], tuple[str, float, int]]:
    """{(pid, start tick): (comm, CPU seconds so far, minor page faults so far)} for every process /proc shows."""
    times = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # the process ended while we read
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()  # fields[0] is field 3 of proc(5), "state"
        minor_faults, utime, stime, start = int(fields[7]), int(fields[11]), int(fields[12]), int(fields[19])
        times[(int(entry.name), start)] = (comm, (utime + stime) / CLOCK_TICKS, minor_faults)
    return times


def host_cpu_seconds(proc: Path = Path("/proc")) -> tuple[float, float] | None:
    """(busy, total) CPU seconds of all the host's cores since boot (/proc/stat), None where there is none."""
    try:
        fields = [float(v) for v in (proc / "stat").read_text().split("\n", 1)[0].split()[1:8]]
    except OSError:
        return None
    total = sum(fields)  # user nice system idle iowait irq softirq (steal and guest left out, as before)
    return (total - fields[3] - fields[4]) / CLOCK_TICKS, total / CLOCK_TICKS


@dataclass
class CpuSnapshot:
    """Cumulative CPU seconds of every live process, of this process's finished children and of the host."""

    processes: dict[tuple[int, int], tuple[str, float, int]]
    children_seconds: float
    children_faults: int
    host: tuple[float, float] | None


def snapshot(proc: Path = Path("/proc")) -> CpuSnapshot:
    """The CPU time of every process now; call before and after a measurement."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return CpuSnapshot(_process_times(proc), children.ru_utime + children.ru_stime, children.ru_minflt,
                       host_cpu_seconds(proc))


def usage_by_role(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, tuple[float, int]]:
    """{group: (CPU seconds, minor page faults)} used between two snapshots.

    A process alive at both counts its difference; one that started in between counts all of it; the load
    generator is this process's children that ended in between (perf_analyzer is waited for, so its use is in
    RUSAGE_CHILDREN, not in /proc, by the second snapshot). Processes that ended without being our children are
    lost, so "other" is a lower bound; the host's total is given beside it.
    """
    used: dict[str, tuple[float, int]] = {}
    for key, (comm, seconds, faults) in after.processes.items():
        _, seconds_before, faults_before = before.processes.get(key, (comm, 0.0, 0))
        if seconds > seconds_before or faults > faults_before:
            role = role_of(comm)
            total_seconds, total_faults = used.get(role, (0.0, 0))
            used[role] = (total_seconds + seconds - seconds_before, total_faults + faults - faults_before)
    # This process's own use is the measuring, not the load: it stays in "other".
    used[LOAD_GENERATOR] = (max(after.children_seconds - before.children_seconds, 0.0),
                            max(after.children_faults - before.children_faults, 0))
    return used


def host_busy(before: CpuSnapshot, after: CpuSnapshot) -> float | None:
    """The share of all the host's cores' time spent busy between two snapshots (0-1), None without /proc/stat."""
    if before.host is None or after.host is None or after.host[1] <= before.host[1]:
        return None
    return (after.host[0] - before.host[0]) / (after.host[1] - before.host[1])


def describe(used: dict[str, tuple[float, int]], wall_seconds: float, inferences: float) -> str:
    """Markdown table rows: cores each group kept busy, its CPU microseconds and minor page faults per inference."""
    rows = ["| process | cores busy | CPU us per inference | minor page faults per inference |", "|---|---|---|---|"]
    for role in [role for _, role in ROLES] + [LOAD_GENERATOR, OTHER]:
        seconds, faults = used.get(role, (0.0, 0))
        per = (f"{seconds / inferences * 1e6:.0f} | {faults / inferences:.1f}" if inferences > 0 else "n/a | n/a")
        rows.append(f"| {role} | {seconds / wall_seconds:.2f} | {per} |")
    return "\n".join(rows)
