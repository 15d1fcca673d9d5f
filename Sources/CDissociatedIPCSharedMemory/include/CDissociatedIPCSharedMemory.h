// What the shm:// backend needs from C that Swift cannot import: glibc
// declares memfd_create and the F_SEAL_* constants only under _GNU_SOURCE,
// and the CMSG_* helpers for passing descriptors are function-like macros.
// Every system call itself is made from Swift (System.swift).

#ifndef C_DISSOCIATED_IPC_SHARED_MEMORY_H
#define C_DISSOCIATED_IPC_SHARED_MEMORY_H

#include <stddef.h>
#include <sys/socket.h>

/// memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING): -1 and errno on failure.
int dipc_memfd_create(const char *name);

/// Adds F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL: 0, or -1 and errno.
int dipc_memfd_seal(int fd);

/// 1 when the file carries F_SEAL_SHRINK (it can never be truncated under
/// a mapping), 0 when not, -1 and errno when the seals cannot be read.
int dipc_memfd_cannot_shrink(int fd);

/// CMSG_SPACE(count * sizeof(int)): control-buffer bytes for `count`
/// descriptors. The kernel never installs more descriptors than the
/// receiver's control buffer holds (it drops the rest and sets MSG_CTRUNC).
size_t dipc_cmsg_space_fds(int count);

/// Writes one SCM_RIGHTS control message carrying `fd` into `message`'s
/// control buffer (which must hold dipc_cmsg_space_fds(1) bytes).
void dipc_cmsg_put_fd(struct msghdr *message, int fd);

/// Copies the descriptors of every SCM_RIGHTS control message of a
/// received `message` into `fds` (at most `capacity`: size the control
/// buffer with dipc_cmsg_space_fds(capacity)); returns how many.
int dipc_cmsg_take_fds(struct msghdr *message, int *fds, int capacity);

#endif
