// What DissociatedIPCFabric needs from libfabric (libfabric-dev, 1.17 or
// later).
//
// Swift imports libfabric's functions (its `static inline` wrappers too),
// structs, enums and shift-built constants directly. The function-like
// macros below do not import, and the `((uint64_t)-1)` constants import
// but do not compile when used ("integer literal '-1' overflows"): each
// gets a wrapper or a typed constant.
#ifndef CLIBFABRIC_SHIM_H
#define CLIBFABRIC_SHIM_H

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <time.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>
#include <rdma/fi_tagged.h>

/// FI_VERSION: a macro; the API version this package asks for.
static inline uint32_t clibfabric_version(uint32_t major, uint32_t minor) { return FI_VERSION(major, minor); }

/// FI_ADDR_UNSPEC: any source address.
static const uint64_t CLIBFABRIC_ADDR_UNSPEC = FI_ADDR_UNSPEC;

/// FI_ADDR_NOTAVAIL: a completion whose source is not in the address vector.
static const uint64_t CLIBFABRIC_ADDR_NOTAVAIL = FI_ADDR_NOTAVAIL;

/// A non-blocking, close-on-exec eventfd (the engine's wake-up), or -1.
static inline int clibfabric_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

// ppoll(2): glibc declares it only under _GNU_SOURCE, which a module header
// must not define (it changes glibc's struct layouts, e.g. fd_set's member
// names, against the Glibc module Swift already built). Declared here with
// glibc's own signature.
extern int ppoll(struct pollfd *fds, nfds_t count, const struct timespec *timeout, const sigset_t *mask);

/// Waits at most `nanoseconds` for one of `fds` to be readable (`ppoll`,
/// which Glibc's Swift module does not export).
static inline int clibfabric_poll(struct pollfd *fds, unsigned count, long long nanoseconds) {
  struct timespec timeout = { (time_t)(nanoseconds / 1000000000), (long)(nanoseconds % 1000000000) };
  return ppoll(fds, count, &timeout, NULL);
}

#endif
