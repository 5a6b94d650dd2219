"""Where a host's CPU time goes during a measurement: Triton's server, its Python-backend stubs, the load
generator (perf_analyzer) and everything else, in cores and in CPU microseconds per inference, with the minor page
faults each group took (a fault is a fresh page's first touch; on a virtual machine each costs microseconds) and
the time its threads were ready to run but waited for a core (the kernel's run-queue delay, /proc/PID/task/TID/
schedstat): all threads, and the main threads alone (a stub's main thread is the one that runs ``execute``).

A GPU server that serves files can be held back by its host: the CUDA decoders' Huffman stage, the Python
stubs and perf_analyzer itself all run on the same cores. Splitting the host's busy time by process says
which of them a higher number would have to come from.
"""
from __future__ import annotations

import math
import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

# /proc/<pid>/stat's comm is cut to 15 characters: "triton_python_backend_stub" reads "triton_python_b".
ROLES = (("tritonserver", "tritonserver"), ("triton_python_b", "Python-backend stubs"))
LOAD_GENERATOR = "perf_analyzer (load generator)"
OTHER = "other processes"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def role_of(comm: str) -> str:
    """The group a process of this name is counted in."""
    return next((role for prefix, role in ROLES if comm.startswith(prefix)), OTHER)


class Usage(NamedTuple):
    """What a process, or a group of them, used: CPU seconds, minor page faults, and seconds its threads (all of
    them, and the main thread) waited for a core while ready to run (NaN where unknown)."""

    seconds: float
    faults: int
    waiting: float = 0.0
    main_waiting: float = 0.0


def _run_delays(entry: Path) -> tuple[float, float]:
    """(seconds all the process's threads, and its main thread, have waited for a core): the second field of each
    thread's schedstat. Zeros where the kernel does not keep it."""
    total = main = 0.0
    try:
        tasks = list((entry / "task").iterdir())
    except OSError:
        return 0.0, 0.0
    for task in tasks:
        try:
            waited = int((task / "schedstat").read_text().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):  # the thread ended while we read, or no schedstat
            continue
        total += waited
        if task.name == entry.name:
            main = waited
    return total, main


def _process_times(proc: Path) -> dict[tuple[int, int], tuple[str, Usage]]:
    """{(pid, start tick): (comm, its use so far)} for every process /proc shows."""
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
        times[(int(entry.name), start)] = (comm, Usage((utime + stime) / CLOCK_TICKS, minor_faults,
                                                       *_run_delays(entry)))
    return times


def host_cpu_seconds(proc: Path = Path("/proc")) -> tuple[float, float, float] | None:
    """(busy, total, stolen) CPU seconds of all the host's cores since boot (/proc/stat), None where there is none.
    Stolen: time a virtual machine's cores were ready but the hypervisor ran something else (not in total)."""
    try:
        fields = [float(v) for v in (proc / "stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return None
    total = sum(fields[:7])  # user nice system idle iowait irq softirq (steal and guest left out, as before)
    steal = fields[7] if len(fields) > 7 else 0.0
    return (total - fields[3] - fields[4]) / CLOCK_TICKS, total / CLOCK_TICKS, steal / CLOCK_TICKS


@dataclass
class CpuSnapshot:
    """Cumulative CPU seconds of every live process, of this process's finished children and of the host."""

    processes: dict[tuple[int, int], tuple[str, Usage]]
    children_seconds: float
    children_faults: int
    host: tuple[float, float, float] | None


def snapshot(proc: Path = Path("/proc")) -> CpuSnapshot:
    """The CPU time of every process now; call before and after a measurement."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return CpuSnapshot(_process_times(proc), children.ru_utime + children.ru_stime, children.ru_minflt,
                       host_cpu_seconds(proc))


def usage_by_role(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, Usage]:
    """{group: what it used} between two snapshots.

    A process alive at both counts its difference; one that started in between counts all of it; the load
    generator is this process's children that ended in between (perf_analyzer is waited for, so its use is in
    RUSAGE_CHILDREN, not in /proc, by the second snapshot; the kernel keeps no run-queue delay there, so it is NaN).
    Processes that ended without being our children are lost, so "other" is a lower bound; the host's total is
    given beside it. A thread that ended in between takes its waiting with it: waits are at least what is shown.
    """
    used: dict[str, Usage] = {}
    for key, (comm, now) in after.processes.items():
        then = before.processes.get(key, (comm, Usage(0.0, 0)))[1]
        if now.seconds > then.seconds or now.faults > then.faults:
            gained = Usage(now.seconds - then.seconds, now.faults - then.faults,
                           max(now.waiting - then.waiting, 0.0), max(now.main_waiting - then.main_waiting, 0.0))
            role = role_of(comm)
            total = used.get(role, Usage(0.0, 0))
            used[role] = Usage(*(a + b for a, b in zip(total, gained)))  # type: ignore[arg-type]
    # This process's own use is the measuring, not the load: it stays in "other".
    used[LOAD_GENERATOR] = Usage(max(after.children_seconds - before.children_seconds, 0.0),
                                 max(after.children_faults - before.children_faults, 0), math.nan, math.nan)
    return used


def _host_share(before: CpuSnapshot, after: CpuSnapshot, field: int) -> float | None:
    """Field ``field`` of the host's CPU seconds gained between two snapshots, as a share of all its cores' time."""
    if before.host is None or after.host is None or after.host[1] <= before.host[1]:
        return None
    return (after.host[field] - before.host[field]) / (after.host[1] - before.host[1])


def host_busy(before: CpuSnapshot, after: CpuSnapshot) -> float | None:
    """The share of all the host's cores' time spent busy between two snapshots (0-1), None without /proc/stat."""
    return _host_share(before, after, 0)


def host_stolen(before: CpuSnapshot, after: CpuSnapshot) -> float | None:
    """Stolen time between two snapshots as a share of the host's cores' time (0-1), None without /proc/stat."""
    return _host_share(before, after, 2)


def describe(used: dict[str, Usage], wall_seconds: float, inferences: float) -> str:
    """Markdown table rows: cores each group kept busy; per inference its CPU microseconds, minor page faults and
    microseconds its threads (all, then the main threads) waited for a core."""
    rows = ["| process | cores busy | CPU us per inference | minor page faults per inference "
            "| waiting for a core, us per inference | main threads waiting, us per inference |", "|---|---|---|---|---|---|"]
    for role in [role for _, role in ROLES] + [LOAD_GENERATOR, OTHER]:
        use = used.get(role, Usage(0.0, 0))
        if inferences > 0:
            waits = ["n/a" if math.isnan(w) else f"{w / inferences * 1e6:.0f}" for w in (use.waiting, use.main_waiting)]
            per = f"{use.seconds / inferences * 1e6:.0f} | {use.faults / inferences:.1f} | {waits[0]} | {waits[1]}"
        else:
            per = "n/a | n/a | n/a | n/a"
        rows.append(f"| {role} | {use.seconds / wall_seconds:.2f} | {per} |")
    return "\n".join(rows)
