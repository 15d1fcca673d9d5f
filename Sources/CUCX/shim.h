// What DissociatedIPCUCX needs from UCX (libucx-dev, 1.13 or later).
//
// Swift imports UCX's functions, structs and enums directly; the function-like
// macros below do not import, so each gets a `static inline` wrapper.
#ifndef CUCX_SHIM_H
#define CUCX_SHIM_H

#include <ucp/api/ucp.h>
#include <ucs/config/global_opts.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

/// UCS_PTR_IS_ERR: a macro comparing a pointer against the error range.
static inline int cucx_ptr_is_err(ucs_status_ptr_t ptr) { return UCS_PTR_IS_ERR(ptr); }

/// UCS_PTR_IS_PTR: a macro; true for a real request handle (not NULL, not an error).
static inline int cucx_ptr_is_ptr(ucs_status_ptr_t ptr) { return UCS_PTR_IS_PTR(ptr) ? 1 : 0; }

/// UCS_PTR_STATUS: a macro casting the pointer back to a status code.
static inline ucs_status_t cucx_ptr_status(ucs_status_ptr_t ptr) { return UCS_PTR_STATUS(ptr); }

/// ucp_dt_make_contig: a macro building a contiguous datatype of bytes.
static inline ucp_datatype_t cucx_dt_contig_bytes(void) { return ucp_dt_make_contig(1); }

/// ucp_dt_make_iov: a macro building the scatter-gather (ucp_dt_iov_t[]) datatype.
static inline ucp_datatype_t cucx_dt_iov(void) { return ucp_dt_make_iov(); }

/// UCP_API_MAJOR / UCP_API_MINOR: macros; the version this package was built against.
static inline unsigned cucx_api_major(void) { return UCP_API_MAJOR; }
static inline unsigned cucx_api_minor(void) { return UCP_API_MINOR; }

/// gettid(2): declared by glibc only with _GNU_SOURCE; the progress threads
/// report their kernel id so tests can read their CPU time.
static inline int cucx_thread_id(void) { return (int)syscall(SYS_gettid); }

#endif
