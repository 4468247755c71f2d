# cython: language_level=3
"""One call that starts a task's process: glibc's posix_spawn with a working directory.

`subprocess.Popen` does the same job with a page of Python around a vfork,
and `os.posix_spawn` cannot set the child's working directory.  This calls
glibc's `posix_spawn` (a vfork: no page tables are copied however large the
agent is) with the file actions a task needs, without the GIL:

    chdir(cwd)                 posix_spawn_file_actions_addchdir_np (glibc 2.29)
    0 <- /dev/null, 1 and 2 <- stdout/stderr, opened for append (created 0644)
    every other descriptor closed  (addclosefrom_np, glibc 2.34)
    a new session (setsid), an empty signal mask, every signal at its default
    (Python ignores SIGPIPE; an ignored signal would stay ignored across exec)

Failures to open, chdir or exec come back as OSError with the child's errno.
Without this module (`MARATHON_PUREPYTHON=1`) the executor uses Popen.
"""

from cpython.bytes cimport PyBytes_AS_STRING
from libc.stdlib cimport free, malloc
from posix.signal cimport sigemptyset, sigfillset, sigset_t
from posix.types cimport mode_t, pid_t


cdef extern from "<fcntl.h>" nogil:
    enum:
        O_RDONLY
        O_WRONLY
        O_CREAT
        O_APPEND


cdef extern from "<spawn.h>" nogil:
    ctypedef struct posix_spawn_file_actions_t:
        pass
    ctypedef struct posix_spawnattr_t:
        pass
    enum:
        POSIX_SPAWN_SETSIGMASK
        POSIX_SPAWN_SETSIGDEF
        POSIX_SPAWN_SETSID
    int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *actions,
                    const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
    int posix_spawn_file_actions_init(posix_spawn_file_actions_t *actions)
    int posix_spawn_file_actions_destroy(posix_spawn_file_actions_t *actions)
    int posix_spawn_file_actions_addopen(posix_spawn_file_actions_t *actions, int fd,
                                         const char *path, int oflag, mode_t mode)
    int posix_spawn_file_actions_addchdir_np(posix_spawn_file_actions_t *actions, const char *path)
    int posix_spawn_file_actions_addclosefrom_np(posix_spawn_file_actions_t *actions, int fd)
    int posix_spawnattr_init(posix_spawnattr_t *attr)
    int posix_spawnattr_destroy(posix_spawnattr_t *attr)
    int posix_spawnattr_setflags(posix_spawnattr_t *attr, short flags)
    int posix_spawnattr_setsigmask(posix_spawnattr_t *attr, const sigset_t *mask)
    int posix_spawnattr_setsigdefault(posix_spawnattr_t *attr, const sigset_t *mask)


cdef char **_c_array(list items) except NULL:
    """NULL-terminated array of pointers into `items` (bytes kept alive by the caller)."""
    cdef Py_ssize_t n = len(items), i
    cdef char **arr = <char **>malloc((n + 1) * sizeof(char *))
    if arr == NULL:
        raise MemoryError()
    for i in range(n):
        arr[i] = PyBytes_AS_STRING(items[i])
    arr[n] = NULL
    return arr


def _fs(value) -> bytes:
    b = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
    if b"\0" in b:
        raise ValueError("embedded null byte")
    return b


def spawn(executable, argv, env, cwd, stdout, stderr):
    """Start `executable` with `argv` and `env` (a mapping) in `cwd`, in a new
    session, stdin from /dev/null and stdout/stderr appended to the two
    paths.  Returns the pid; raises OSError if the child could not exec."""
    cdef list c_argv = [_fs(a) for a in argv]
    cdef list c_env = [_fs(k) + b"=" + _fs(v) for k, v in env.items()]
    cdef bytes c_path = _fs(executable), c_cwd = _fs(cwd)
    cdef bytes c_out = _fs(stdout), c_err = _fs(stderr)
    if not c_argv:
        raise ValueError("argv must not be empty")
    cdef char **argv_arr = _c_array(c_argv)
    cdef char **env_arr = NULL
    cdef posix_spawn_file_actions_t actions
    cdef posix_spawnattr_t attr
    cdef sigset_t empty, every
    cdef pid_t pid = 0
    cdef int rc = 0
    cdef const char *path_p = c_path
    cdef const char *cwd_p = c_cwd
    cdef const char *out_p = c_out
    cdef const char *err_p = c_err
    try:
        env_arr = _c_array(c_env)
        with nogil:
            posix_spawn_file_actions_init(&actions)
            posix_spawnattr_init(&attr)
            sigemptyset(&empty)
            sigfillset(&every)
            rc = posix_spawn_file_actions_addchdir_np(&actions, cwd_p)
            if rc == 0:
                rc = posix_spawn_file_actions_addopen(&actions, 0, b"/dev/null", O_RDONLY, 0)
            if rc == 0:
                rc = posix_spawn_file_actions_addopen(&actions, 1, out_p, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            if rc == 0:
                rc = posix_spawn_file_actions_addopen(&actions, 2, err_p, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            if rc == 0:
                rc = posix_spawn_file_actions_addclosefrom_np(&actions, 3)
            if rc == 0:
                rc = posix_spawnattr_setflags(
                    &attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
            if rc == 0:
                rc = posix_spawnattr_setsigmask(&attr, &empty)
            if rc == 0:
                rc = posix_spawnattr_setsigdefault(&attr, &every)
            if rc == 0:
                rc = posix_spawn(&pid, path_p, &actions, &attr, argv_arr, env_arr)
            posix_spawn_file_actions_destroy(&actions)
            posix_spawnattr_destroy(&attr)
    finally:
        free(argv_arr)
        free(env_arr)
    if rc != 0:
        import os
        raise OSError(rc, os.strerror(rc), executable)
    return pid
