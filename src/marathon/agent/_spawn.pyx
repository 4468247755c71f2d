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

`spawn_many` starts a whole share of a burst in one call that holds no GIL
from the first task to the last: per task it makes the sandbox directory,
spawns, opens a pidfd and reads the start time from /proc/<pid>/stat.
Each of those is a system call that would otherwise give the GIL up and
wait to get it back from the event loop and the other spawn threads.

Without this module (`MARATHON_PUREPYTHON=1`) the executor uses Popen.
"""

from cpython.bytes cimport PyBytes_AS_STRING
from libc.stdlib cimport free, malloc
from posix.signal cimport sigemptyset, sigfillset, sigset_t
from posix.types cimport mode_t, pid_t


cdef extern from "<errno.h>" nogil:
    int errno
    enum:
        EEXIST


cdef extern from "<unistd.h>" nogil:
    long syscall(long number, ...)
    ssize_t read(int fd, void *buf, size_t count)
    int close(int fd)


cdef extern from "<sys/syscall.h>" nogil:
    enum:
        SYS_pidfd_open


cdef extern from "<sys/stat.h>" nogil:
    int mkdir(const char *path, mode_t mode)


cdef extern from "<stdio.h>" nogil:
    int snprintf(char *buf, size_t size, const char *fmt, ...)


cdef extern from "<fcntl.h>" nogil:
    int open(const char *path, int flags)
    enum:
        O_CLOEXEC
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


cdef int _spawn(pid_t *pid, const char *path, char **argv, char **env, const char *cwd,
                const char *out, const char *err) noexcept nogil:
    """posix_spawn with the task's file actions and attributes: 0 or an errno."""
    cdef posix_spawn_file_actions_t actions
    cdef posix_spawnattr_t attr
    cdef sigset_t empty, every
    cdef int rc
    posix_spawn_file_actions_init(&actions)
    posix_spawnattr_init(&attr)
    sigemptyset(&empty)
    sigfillset(&every)
    rc = posix_spawn_file_actions_addchdir_np(&actions, cwd)
    if rc == 0:
        rc = posix_spawn_file_actions_addopen(&actions, 0, b"/dev/null", O_RDONLY, 0)
    if rc == 0:
        rc = posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    if rc == 0:
        rc = posix_spawn_file_actions_addopen(&actions, 2, err, O_WRONLY | O_CREAT | O_APPEND, 0o644)
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
        rc = posix_spawn(pid, path, &actions, &attr, argv, env)
    posix_spawn_file_actions_destroy(&actions)
    posix_spawnattr_destroy(&attr)
    return rc


cdef long long _start_time(pid_t pid) noexcept nogil:
    """Field 22 of /proc/<pid>/stat (clock ticks after boot), or -1."""
    cdef char path[64]
    cdef char buf[1024]
    cdef ssize_t n
    cdef Py_ssize_t i, end = -1
    cdef int field
    cdef long long value = 0
    snprintf(path, sizeof(path), b"/proc/%d/stat", <int>pid)
    cdef int fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0:
        return -1
    n = read(fd, buf, sizeof(buf) - 1)
    close(fd)
    if n <= 0:
        return -1
    # The command name (field 2) may hold spaces and ")": fields 3 on
    # start after its last ")".
    for i in range(n - 1, -1, -1):
        if buf[i] == 41:  # ')'
            end = i
            break
    if end < 0:
        return -1
    field = 2
    i = end + 1
    while i < n and field < 22:
        if buf[i] == 32:  # ' ': the next field starts
            field += 1
        i += 1
    if field != 22:
        return -1
    while i < n and 48 <= buf[i] <= 57:
        value = value * 10 + (buf[i] - 48)
        i += 1
    return value


cdef struct _Job:
    const char *path
    char **argv
    char **env
    const char *cwd
    const char *out
    const char *err
    pid_t pid
    int pidfd
    long long start_time
    int error  # an errno, 0 if none
    int stage  # where it failed: 1 the sandbox directory, 2 the spawn, 3 the pidfd


cdef int _prepare(_Job *job, executable, argv, env, cwd, stdout, stderr, list keep) except -1:
    """Fill `job` from Python values; the bytes it points into go to `keep`
    (which must outlive the job).  `job.argv`/`job.env` are the caller's to free."""
    cdef list c_argv = [_fs(a) for a in argv]
    if not c_argv:
        raise ValueError("argv must not be empty")
    cdef list c_env = [_fs(k) + b"=" + _fs(v) for k, v in env.items()]
    cdef bytes c_path = _fs(executable), c_cwd = _fs(cwd), c_out = _fs(stdout), c_err = _fs(stderr)
    keep.append((c_argv, c_env, c_path, c_cwd, c_out, c_err))
    job.argv = _c_array(c_argv)
    job.env = _c_array(c_env)
    job.path = c_path
    job.cwd = c_cwd
    job.out = c_out
    job.err = c_err
    job.pid = 0
    job.pidfd = -1
    job.start_time = -1
    job.error = 0
    job.stage = 0
    return 0


def spawn(executable, argv, env, cwd, stdout, stderr):
    """Start `executable` with `argv` and `env` (a mapping) in `cwd`, in a new
    session, stdin from /dev/null and stdout/stderr appended to the two
    paths.  Returns the pid; raises OSError if the child could not exec."""
    cdef _Job job
    cdef list keep = []
    job.argv = NULL
    job.env = NULL
    try:
        _prepare(&job, executable, argv, env, cwd, stdout, stderr, keep)
        with nogil:
            job.error = _spawn(&job.pid, job.path, job.argv, job.env, job.cwd, job.out, job.err)
    finally:
        free(job.argv)
        free(job.env)
    if job.error != 0:
        import os
        raise OSError(job.error, os.strerror(job.error), executable)
    return job.pid


def spawn_many(jobs):
    """Start every job of `jobs`, a list of (executable, argv, env, cwd,
    stdout, stderr) as for `spawn`, without taking the GIL in between.

    Each `cwd` is created first (mode 0755; one that exists is fine).
    Returns one (pid, pidfd, start_time, error) per job, in order: `error`
    is None or the OSError that stopped it.  A job whose pidfd could not be
    opened has its pid and the error: it runs, unwatched, and the caller
    must deal with it.  `start_time` is field 22 of /proc/<pid>/stat, or
    None if it could not be read.  Bad arguments (a NUL byte, an empty
    argv) raise before anything is started.
    """
    cdef Py_ssize_t n = len(jobs), i
    cdef list keep = []  # the bytes the C arrays point into
    cdef _Job *arr = <_Job *>malloc(max(n, 1) * sizeof(_Job))
    if arr == NULL:
        raise MemoryError()
    for i in range(n):
        arr[i].argv = NULL
        arr[i].env = NULL
    try:
        for i in range(n):
            executable, argv, env, cwd, stdout, stderr = jobs[i]
            _prepare(&arr[i], executable, argv, env, cwd, stdout, stderr, keep)
        with nogil:
            for i in range(n):
                if mkdir(arr[i].cwd, 0o755) != 0 and errno != EEXIST:
                    arr[i].error, arr[i].stage = errno, 1
                    continue
                arr[i].error = _spawn(&arr[i].pid, arr[i].path, arr[i].argv, arr[i].env,
                                      arr[i].cwd, arr[i].out, arr[i].err)
                if arr[i].error != 0:
                    arr[i].stage = 2
                    arr[i].pid = 0
                    continue
                arr[i].pidfd = <int>syscall(SYS_pidfd_open, arr[i].pid, 0)
                if arr[i].pidfd < 0:
                    arr[i].error, arr[i].stage = errno, 3
                # Readable even if it already exited: it stays a zombie
                # until its parent reaps it.
                arr[i].start_time = _start_time(arr[i].pid)
        import os
        out = []
        for i in range(n):
            error = None
            if arr[i].error != 0:
                stage = arr[i].stage
                where = (jobs[i][3] if stage == 1 else jobs[i][0] if stage == 2 else "pidfd_open")
                error = OSError(arr[i].error, os.strerror(arr[i].error), where)
            out.append((arr[i].pid, arr[i].pidfd, arr[i].start_time if arr[i].start_time >= 0 else None,
                        error))
        return out
    finally:
        for i in range(n):
            free(arr[i].argv)
            free(arr[i].env)
        free(arr)
