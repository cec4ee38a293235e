"""A jv.save killed by the file-size limit (run by tests/test_checkpoint_safety.py).

Usage: python _ckpt_killed_save.py PATH LIMIT_BYTES MODE
MODE "unnamed" saves as jv.save does; "named" first turns off unnamed
temporary files (O_TMPFILE), so the save takes the named-temporary fallback.
The limit is under the checkpoint's size: the kernel sends SIGXFSZ while the
data is written, and with SIGXFSZ at its default action the process dies there.
It prints "writing data" once the save is writing, so the test knows where it died.
"""

import resource
import signal
import sys

import numpy as np

import jaxvars as jv
import jaxvars._atomic_file as atomic_file
import jaxvars._checkpoint as checkpoint


def main() -> None:
    path, limit, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode == "named":
        atomic_file._open_unnamed = lambda directory: None  # as on a filesystem without it
    variable = jv.Variable(np.ones(1 << 16, np.float32), name="v")  # 256 KiB of data
    real_bytes = checkpoint.as_bytes

    def announced(array):
        print("writing data", flush=True)  # a pipe: not a file the limit counts
        return real_bytes(array)

    checkpoint.as_bytes = announced
    # Python ignores SIGXFSZ (a write then fails with EFBIG); a process that
    # restores the default is killed instead, which no cleanup code survives.
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    jv.save(path, [variable])
    sys.exit("the save was not killed: is the limit above the checkpoint's size?")


if __name__ == "__main__":
    main()
