// The built-in backends' defaults for settings UCX and libfabric read only
// from the environment. Each is set unless the environment names it, once,
// as the program loads: setenv while another thread reads the environment
// (posix_spawn, getenv) can make that thread read freed memory, so it must
// happen before any thread starts.

#include <stdlib.h>

static const struct {
  const char *name;
  const char *value;
} default_settings[] = {
  // ucx:// (UCX-CONF-2). A server can listen again on its port while the
  // connections it served are in TIME-WAIT.
  {"UCX_TCP_CM_REUSEADDR", "y"},
  // No registration cache: it kept every closed connection's worker
  // buffers (2 MiB resident each) in UCX 1.13.
  {"UCX_RCACHE_ENABLE", "n"},
  // Shared-memory and cma lanes for same-host peers (UCX-LANE-1): with
  // UCP_ERR_HANDLING_MODE_PEER, UCX leaves out its shared-memory
  // transports unless they handle errors, and cma from rendezvous unless
  // memory may be invalidated.
  {"UCX_MM_ERROR_HANDLING", "y"},
  {"UCX_CMA_MEMORY_INVALIDATE", "y"},
  // fabric:// over tcp;ofi_rxm (FABRIC-MEM-1). rxm posts receive buffers
  // that take only a header over tcp (payloads land in the application's
  // buffers), 4096 of 16 KiB each by default: about 85 MiB resident per
  // endpoint, and this backend opens one per connection. 32 buffers of
  // 256 bytes, with the eager limit kept at 16 KiB.
  {"FI_OFI_RXM_BUFFER_SIZE", "256"},
  {"FI_OFI_RXM_EAGER_LIMIT", "16384"},
  {"FI_OFI_RXM_MSG_RX_SIZE", "32"},
};

__attribute__((constructor)) static void cdipc_set_environment_defaults(void) {
  for (size_t index = 0; index < sizeof default_settings / sizeof default_settings[0]; index++) {
    setenv(default_settings[index].name, default_settings[index].value, 0);
  }
}
