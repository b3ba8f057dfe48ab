// procpool - identifying the build a process runs, so workers can prove they match their parent.
#include <elf.h>
#include <link.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "internal.hpp"

namespace procpool::detail {
namespace {

auto read_build_id() -> std::string {
  std::string id;
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* out) -> int {
        auto& result = *static_cast<std::string*>(out);
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const auto& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_NOTE) continue;
          const auto* p = reinterpret_cast<const unsigned char*>(info->dlpi_addr + ph.p_vaddr);
          const auto* end = p + ph.p_memsz;
          while (p + sizeof(ElfW(Nhdr)) <= end) {
            ElfW(Nhdr) note;
            std::memcpy(&note, p, sizeof note);
            const auto* name = p + sizeof note;
            const auto* desc = name + ((note.n_namesz + 3) & ~3U);
            if (note.n_type == NT_GNU_BUILD_ID && note.n_namesz == 4 &&
                std::memcmp(name, "GNU", 4) == 0) {
              char hex[3];
              for (unsigned j = 0; j < note.n_descsz; ++j) {
                std::snprintf(hex, sizeof hex, "%02x", desc[j]);
                result += hex;
              }
              return 1;
            }
            p = desc + ((note.n_descsz + 3) & ~3U);
          }
        }
        return 1;  // only the main program (listed first) matters
      },
      &id);
  return id;
}

}  // namespace

auto build_id() -> const std::string& {
  static const std::string id = read_build_id();
  return id;
}

}  // namespace procpool::detail
