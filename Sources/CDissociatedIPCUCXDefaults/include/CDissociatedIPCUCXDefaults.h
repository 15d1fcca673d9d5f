#pragma once

// Nothing to call: this target's constructor puts ucx://'s default UCX
// settings in the environment as the program loads (UCX-CONF-2; see
// defaults.c). Linking the target is what applies them.
