/* site.c owns how the obs layer names things: context kinds and creation
 * sites, for the leak report, the trace writer and uvctx_site_format()
 * alike. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <inttypes.h>
#include <stdio.h>

#include "core/internal.h"
#include "obs/obs.h"
#include "uvctx/snapshot.h"

const char* uvctx__kind_name(unsigned kind) {
  static const char* const names[] = {"background", "cancel", "deadline",
                                      "any",        "value",  "without_cancel"};
  return kind <= UVCTX__DETACHED ? names[kind] : "?";
}

/* The creation site is the constructor's return address; dladdr() names
 * the function when the symbol is exported (link executables with
 * -rdynamic), and the module offset always works with addr2line. */
int uvctx_site_format(const void* site, char* buf, size_t size) {
  Dl_info info;
  if (site != NULL && dladdr(site, &info) != 0 && info.dli_fname != NULL) {
    if (info.dli_sname != NULL)
      return snprintf(buf, size, "%s+0x%" PRIxPTR " in %s", info.dli_sname,
                      (uintptr_t)site - (uintptr_t)info.dli_saddr,
                      info.dli_fname);
    return snprintf(buf, size, "0x%" PRIxPTR " in %s",
                    (uintptr_t)site - (uintptr_t)info.dli_fbase,
                    info.dli_fname);
  }
  return snprintf(buf, size, "%p", site);
}

char* uvctx__site_format(void* site, char* buf, size_t size) {
  uvctx_site_format(site, buf, size);
  return buf;
}
