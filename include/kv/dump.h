/* dump.h - kvdump, the offline reader of a kvd data directory.
 *
 * Its logic lives in the core library so that it is built and tested with
 * the rest; src/bin/kvdump.c only calls kv_dump_main.
 */
#ifndef KV_DUMP_H
#define KV_DUMP_H

/* Runs kvdump with the given arguments.  Writes the dump to stdout and
 * diagnostics to stderr.  Returns the exit status: 0 on success, 1 on an
 * error, 2 on bad arguments. */
int kv_dump_main(int argc, char **argv);

#endif
