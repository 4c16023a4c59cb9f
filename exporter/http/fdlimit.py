"""Open-file limits: every connection is a descriptor.

Go programs (node_exporter, Prometheus) raise their soft RLIMIT_NOFILE to the hard limit at
start; so does the daemon, since the soft default of 1024 would cap the connection limit
long before memory does.  Under systemd the unit's ``LimitNOFILE=`` sets both (its system
call filter forbids setrlimit), and the connection limit is kept below what is left after
the descriptors the daemon needs for itself.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

RESERVED_FDS = 64  # logs, state files, notifier sockets, /proc reads, the listener


def raise_open_files_limit() -> int:
    """Raise the soft limit to the hard one where allowed; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft >= hard:
        return soft
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as e:
        log.debug("keeping the open-files limit at %d: %s", soft, e)
        return soft
    log.debug("raised the open-files limit from %d to %d", soft, target)
    return target


def connection_cap(wanted: int, soft_limit: int) -> int:
    """``wanted`` connections, or fewer if the descriptor limit cannot hold them."""
    room = max(soft_limit - RESERVED_FDS, 16)
    if wanted > room:
        log.warning("http.max_connections %d is above what the open-files limit (%d) allows; "
                    "using %d (raise LimitNOFILE to allow more)", wanted, soft_limit, room)
        return room
    return wanted
