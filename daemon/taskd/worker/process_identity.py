"""Which process a worker is, in terms another process on the same machine can check.

A worker row records its process identity: the kernel's boot id, the pid namespace, the pid and
the process's start time (clock ticks since boot). A daemon in the same boot and the same pid
namespace can then prove that the worker's process has exited: its pid exists no more, names
another process (a different start time), or names a zombie (it has exited; the kernel closes
every file of a process, its database sockets too, before it becomes one). Anything less is no
proof: a pid whose /proc entry this process may not read (hidepid, another user), another
machine, another namespace. Linux only; elsewhere there is no identity and no proof.

A pid namespace's id (its nsfs inode) is unique among the namespaces that exist: if the one
recorded was destroyed and its number reused, every process of the old one is gone anyway.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from typing import Any

_BOOT_ID = "/proc/sys/kernel/random/boot_id"


@dataclass(frozen=True)
class ProcessIdentity:
    boot_id: str
    pid_namespace: str
    pid: int
    start_time: int
    """Field 22 of /proc/<pid>/stat: clock ticks from boot to the process's start."""

    def stored(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_stored(cls, value: object) -> ProcessIdentity | None:
        """The identity a worker row recorded; None when absent or malformed (no proof)."""
        if not isinstance(value, dict):
            return None
        boot_id, namespace = value.get("boot_id"), value.get("pid_namespace")
        pid, start_time = value.get("pid"), value.get("start_time")
        if not (isinstance(boot_id, str) and boot_id and isinstance(namespace, str) and namespace):
            return None
        if type(pid) is not int or pid <= 0 or type(start_time) is not int:
            return None
        return cls(boot_id, namespace, pid, start_time)


def _stat(pid: int | str) -> tuple[str, int]:
    """(state, start time) from /proc/<pid>/stat; OSError or ValueError when unreadable."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        text = stat.read().decode("ascii", "replace")
    # the command name (field 2) is in parentheses and may hold spaces and parentheses itself
    fields = text[text.rindex(")") + 1 :].split()
    return fields[0], int(fields[19])  # fields 3 and 22


def current() -> ProcessIdentity | None:
    """This process's identity; None off Linux or where /proc does not tell."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open(_BOOT_ID) as boot:
            boot_id = boot.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
        _, start_time = _stat("self")
    except (OSError, ValueError, IndexError):
        return None
    if not boot_id:
        return None
    return ProcessIdentity(boot_id, namespace, os.getpid(), start_time)


def has_exited(other: ProcessIdentity, here: ProcessIdentity | None) -> bool:
    """Whether ``other`` is provably no running process any more, seen from ``here`` (this
    process's identity). False means "not proven", never "alive"."""
    if here is None or (other.boot_id, other.pid_namespace) != (here.boot_id, here.pid_namespace):
        return False
    try:
        os.kill(other.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, another user's: its /proc entry may still tell
    except OSError:
        return False
    try:
        state, start_time = _stat(other.pid)
    except (OSError, ValueError, IndexError):
        return False  # hidden (hidepid), or it exited just now: the slow path decides
    return start_time != other.start_time or state in ("Z", "X")
