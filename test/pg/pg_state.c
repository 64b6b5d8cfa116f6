/* pg_state.c: the reader of cluster.sh's state file (see pg_state.h). */
#include "pg_state.h"

#include <stdio.h>
#include <string.h>

int pg_state_get(const char* path, const char* key, char* out, size_t size) {
  char line[512];
  size_t klen = strlen(key);
  int found = 0;
  FILE* f = fopen(path, "r");

  if (f == NULL)
    return 0;
  while (fgets(line, sizeof(line), f) != NULL) {
    if (strncmp(line, key, klen) == 0 && line[klen] == '=') {
      char* v = line + klen + 1 + (line[klen + 1] == '\'');
      v[strcspn(v, "'\n")] = '\0';
      snprintf(out, size, "%s", v);
      found = 1;
    }
  }
  fclose(f);
  return found;
}
