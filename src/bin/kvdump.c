/* kvdump.c - entry point of kvdump; see kv/dump.h. */
#include "kv/dump.h"

int main(int argc, char **argv) { return kv_dump_main(argc, argv); }
