/* replay.c owns the plain driver of the fuzz targets: no fuzzing engine,
 * a main() that runs LLVMFuzzerTestOneInput() once on every file named on
 * the command line, or in the directories named, in name order, so that
 * every build of the test command replays the committed corpora (and a
 * reproducer left by a fuzzing run can be replayed under any sanitizer). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

int LLVMFuzzerInitialize(int* argc, char*** argv) __attribute__((weak));

static int run_file(const char* path) {
  FILE* f = fopen(path, "rb");
  uint8_t* buf;
  long n;

  if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
      fseek(f, 0, SEEK_SET) != 0) {
    fprintf(stderr, "replay: cannot read %s\n", path);
    if (f != NULL)
      fclose(f);
    return -1;
  }
  /* One byte more, so that an empty input is not a NULL pointer. */
  buf = malloc((size_t)n + 1);
  if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) {
    fprintf(stderr, "replay: cannot read %s\n", path);
    free(buf);
    fclose(f);
    return -1;
  }
  fclose(f);
  LLVMFuzzerTestOneInput(buf, (size_t)n);
  free(buf);
  return 0;
}

static int by_name(const void* a, const void* b) {
  return strcmp(*(char* const*)a, *(char* const*)b);
}

static int run_dir(const char* dir, int* count) {
  DIR* d = opendir(dir);
  struct dirent* e;
  char** names = NULL;
  size_t n = 0, cap = 0, i;
  int rc = 0;

  if (d == NULL) {
    fprintf(stderr, "replay: cannot open %s\n", dir);
    return -1;
  }
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    if (n == cap) {
      char** q = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof(*names));
      if (q == NULL)
        abort();
      names = q;
    }
    names[n] = malloc(strlen(dir) + strlen(e->d_name) + 2);
    if (names[n] == NULL)
      abort();
    sprintf(names[n], "%s/%s", dir, e->d_name);
    n++;
  }
  closedir(d);
  qsort(names, n, sizeof(*names), by_name);
  for (i = 0; i < n; i++) {
    if (rc == 0 && run_file(names[i]) != 0)
      rc = -1;
    (*count)++;
    free(names[i]);
  }
  free(names);
  return rc;
}

int main(int argc, char** argv) {
  int count = 0;
  int i;

  if (LLVMFuzzerInitialize != NULL)
    LLVMFuzzerInitialize(&argc, &argv);
  if (argc < 2) {
    fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
    return 2;
  }
  for (i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) != 0) {
      fprintf(stderr, "replay: no such file %s\n", argv[i]);
      return 1;
    }
    if (S_ISDIR(st.st_mode) ? run_dir(argv[i], &count) != 0
                            : (count++, run_file(argv[i]) != 0))
      return 1;
  }
  if (count == 0) {
    fprintf(stderr, "replay: no inputs\n");
    return 1;
  }
  printf("replayed %d inputs\n", count);
  return 0;
}
