// procpool - naming the function a task runs, for error messages. Runs only on error paths.
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "exception_codec.hpp"
#include "internal.hpp"

namespace procpool::detail {
namespace {

struct symbol {
  std::uintptr_t start, size;
  std::string name;
};

// Function symbols from an object file's full symbol table (.symtab), which, unlike the dynamic
// one dladdr reads, also lists static functions and functions in anonymous namespaces. Empty when
// the file is stripped.
auto read_symtab(const std::string& path) -> std::vector<symbol> {
  std::vector<symbol> out;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  struct stat st {};
  void* map = MAP_FAILED;
  if (::fstat(fd, &st) == 0 && st.st_size > static_cast<off_t>(sizeof(ElfW(Ehdr)))) {
    map = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  }
  ::close(fd);
  if (map == MAP_FAILED) return out;
  const auto* base = static_cast<const unsigned char*>(map);
  const auto size = static_cast<std::size_t>(st.st_size);
  auto in_file = [&](std::size_t off, std::size_t len) { return off <= size && len <= size - off; };
  ElfW(Ehdr) eh;
  std::memcpy(&eh, base, sizeof eh);
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0 && eh.e_shentsize == sizeof(ElfW(Shdr)) &&
      in_file(eh.e_shoff, std::size_t{eh.e_shnum} * sizeof(ElfW(Shdr)))) {
    const auto* sections = reinterpret_cast<const ElfW(Shdr)*>(base + eh.e_shoff);
    for (unsigned i = 0; i < eh.e_shnum; ++i) {
      const auto& sh = sections[i];
      if (sh.sh_type != SHT_SYMTAB || sh.sh_link >= eh.e_shnum) continue;
      const auto& strtab = sections[sh.sh_link];
      if (!in_file(sh.sh_offset, sh.sh_size) || !in_file(strtab.sh_offset, strtab.sh_size))
        continue;
      const auto* syms = reinterpret_cast<const ElfW(Sym)*>(base + sh.sh_offset);
      for (std::size_t j = 0; j < sh.sh_size / sizeof(ElfW(Sym)); ++j) {
        const auto& s = syms[j];
        if (ELF64_ST_TYPE(s.st_info) != STT_FUNC || s.st_value == 0 || s.st_name >= strtab.sh_size)
          continue;
        const char* name = reinterpret_cast<const char*>(base + strtab.sh_offset + s.st_name);
        out.push_back(
            {s.st_value, s.st_size, std::string(name, strnlen(name, strtab.sh_size - s.st_name))});
      }
    }
  }
  ::munmap(map, size);
  return out;
}

auto lookup_symtab(const std::string& path, std::uintptr_t offset) -> std::string {
  static std::mutex mutex;
  static std::map<std::string, std::vector<symbol>> cache;
  std::lock_guard lock(mutex);
  auto it = cache.find(path);
  if (it == cache.end()) it = cache.emplace(path, read_symtab(path)).first;
  for (const auto& s : it->second) {
    if (offset >= s.start && offset < s.start + std::max<std::uintptr_t>(s.size, 1)) return s.name;
  }
  return {};
}

}  // namespace

auto function_name(std::uintptr_t function, const std::type_info* callable_type) -> std::string {
  if (callable_type != nullptr) return demangle(callable_type->name());
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(function), &info) != 0) {
    if (info.dli_sname != nullptr) return demangle(info.dli_sname);
    if (info.dli_fname != nullptr && info.dli_fbase != nullptr) {
      const auto offset = function - reinterpret_cast<std::uintptr_t>(info.dli_fbase);
      // The main program's dli_fname may be empty or relative; /proc/self/exe is always right.
      const bool main_program = info.dli_fbase == reinterpret_cast<void*>(_r_debug.r_map->l_addr) ||
                                info.dli_fname[0] == '\0';
      const std::string file = main_program ? "/proc/self/exe" : info.dli_fname;
      if (auto name = lookup_symtab(file, offset); !name.empty()) return demangle(name.c_str());
      char text[64];
      std::snprintf(text, sizeof text, "function at +0x%zx in ", static_cast<std::size_t>(offset));
      return text + std::string(info.dli_fname);
    }
  }
  char raw[32];
  std::snprintf(raw, sizeof raw, "0x%zx", static_cast<std::size_t>(function));
  return std::string("function at ") + raw;
}

}  // namespace procpool::detail
