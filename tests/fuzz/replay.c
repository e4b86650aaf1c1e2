/* replay.c - feeds files to a libFuzzer harness without libFuzzer.
 *
 * Usage: replay_<name> PATH...  Each PATH is a corpus directory, whose
 * regular files are fed to LLVMFuzzerTestOneInput in name order, or a
 * single file.  Each input is read into a buffer of exactly its size, so a
 * sanitized build catches the harness or the code under test reading past
 * it.  Exits 1 if a path is missing or unreadable or a directory holds no
 * regular file, so a lost corpus cannot pass as an empty one.
 */
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads the file at path (size bytes, from stat) into a buffer of exactly
 * that size and feeds it to the harness.  Returns 0, or -1 after printing
 * why the file could not be read. */
static int replay_file(const char *path, size_t size) {
  uint8_t *buf = malloc(size ? size : 1);
  FILE *f = fopen(path, "rb");
  int rc = 0;
  if (!buf || !f) {
    fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
    rc = -1;
  } else if (fread(buf, 1, size, f) != size || fgetc(f) != EOF) {
    fprintf(stderr, "replay: %s: short read or file changed\n", path);
    rc = -1;
  } else {
    LLVMFuzzerTestOneInput(buf, size);
  }
  if (f) fclose(f);
  free(buf);
  return rc;
}

/* Feeds every regular file in dir, sorted by name (other entries, such as
 * subdirectories, are skipped).  Returns the number fed, or -1 on an
 * error. */
static long replay_dir(const char *dir) {
  struct dirent **names;
  int n = scandir(dir, &names, NULL, alphasort);
  if (n < 0) {
    fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
    return -1;
  }
  long fed = 0;
  int failed = 0;
  for (int i = 0; i < n; i++) {
    char *path;
    struct stat st;
    if (!failed && asprintf(&path, "%s/%s", dir, names[i]->d_name) >= 0) {
      if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
        if (replay_file(path, (size_t)st.st_size) < 0) failed = 1;
        else fed++;
      }
      free(path);
    } else {
      failed = 1;
    }
    free(names[i]);
  }
  free(names);
  return failed ? -1 : fed;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
    return 2;
  }
  int status = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) != 0) {
      fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
      status = 1;
    } else if (S_ISDIR(st.st_mode)) {
      long fed = replay_dir(argv[i]);
      if (fed < 0) {
        status = 1;
      } else if (fed == 0) {
        fprintf(stderr, "replay: %s: no files to replay\n", argv[i]);
        status = 1;
      } else {
        printf("replayed %ld files from %s\n", fed, argv[i]);
      }
    } else if (S_ISREG(st.st_mode)) {
      if (replay_file(argv[i], (size_t)st.st_size) < 0) status = 1;
      else printf("replayed 1 file: %s\n", argv[i]);
    } else {
      fprintf(stderr, "replay: %s: not a file or directory\n", argv[i]);
      status = 1;
    }
  }
  return status;
}
