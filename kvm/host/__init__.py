"""The only door to the OS: commands (argv lists, never shell strings), processes, signals, file writes.

Every command is logged at debug level as a copy-pasteable line. In dry-run mode
mutating calls are printed (on stdout, as the result of the dry run) and skipped;
reads still run so the plan printed is the real one.

Callers write host.run(...), host.write_file(...): this face hands on the names of
mode.py (dry run, --debug), process.py (commands, processes, signals), files.py (atomic
writes, copies, sparse files) and relay.py (streams between processes).
"""

from kvm.host.files import (  # noqa: F401
    ReadRefused,
    WriteFailed,
    copy_file,
    grow_file,
    make_dirs,
    make_sparse,
    read_bounded,
    read_text,
    remove_file,
    tighten_mode,
    write_file,
)
from kvm.host.mode import _debug, _plan, debug_line, dry_run, plan, set_debug, set_dry_run  # noqa: F401
from kvm.host.process import (  # noqa: F401
                              PIPE,
                              Pending,
                              Result,
                              Timeout,
                              exec_replace,
                              is_root,
                              kill_group,
                              list_processes,
                              parent_pid,
                              pid_alive,
                              process_args,
                              run,
                              run_later,
                              run_limited,
                              send_signal,
                              spawn,
                              spawn_quiet,
                              wait_process,
)
from kvm.host.relay import Peer, relay  # noqa: F401
