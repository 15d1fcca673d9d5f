#pragma once

// Nothing to call: this target's constructor puts the built-in backends'
// default UCX and libfabric settings in the environment as the program
// loads (UCX-CONF-2, FABRIC-MEM-1; see defaults.c). Linking the target is
// what applies them.
