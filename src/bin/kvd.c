/* kvd - the durable in-memory key-value server. */
#include "kv/server.h"

int main(int argc, char **argv) { return kv_server_main(argc, argv); }
