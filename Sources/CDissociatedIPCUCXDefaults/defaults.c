// The environment is changed here, once, as the program loads: setenv
// while another thread reads the environment (posix_spawn, getenv) can
// make that thread read freed memory, so it must happen before any
// thread starts (UCX-CONF-2).

#include <stdlib.h>
#include <string.h>

static const char *const default_settings[] = {
  // A server can listen again on its port while the connections it
  // served are in TIME-WAIT.
  "UCX_TCP_CM_REUSEADDR=y",
  // No registration cache: it kept every closed connection's worker
  // buffers (2 MiB resident each) in UCX 1.13.
  "UCX_RCACHE_ENABLE=n",
  NULL,
};

__attribute__((constructor)) static void cdipc_set_ucx_defaults(void) {
  for (const char *const *setting = default_settings; *setting != NULL; setting++) {
    const char *equals = strchr(*setting, '=');
    char name[64];
    size_t length = (size_t)(equals - *setting);
    if (equals == NULL || length >= sizeof name) continue;
    memcpy(name, *setting, length);
    name[length] = '\0';
    setenv(name, equals + 1, 0);
  }
}
