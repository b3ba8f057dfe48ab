// procpool - carrying a task's exception from a worker to the parent.
#include "exception_codec.hpp"

#include <cxxabi.h>

#include <cstdlib>
#include <future>
#include <ios>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <system_error>

#include "procpool/error.hpp"
#include "procpool/exceptions.hpp"

namespace procpool::detail {
namespace {

struct registry {
  std::mutex mutex;
  std::map<std::string, exception_factory> by_name;
};

auto the_registry() -> registry& {
  static registry r;
  return r;
}

auto find_registered(const std::string& mangled) -> exception_factory {
  auto& r = the_registry();
  std::lock_guard lock(r.mutex);
  auto it = r.by_name.find(mangled);
  return it == r.by_name.end() ? nullptr : it->second;
}

template <class E>
auto make_std(const std::string& what) -> std::exception_ptr {
  return std::make_exception_ptr(E(what));
}

// Standard types rebuilt from their what() alone, keyed by mangled name.
auto std_factories() -> const std::map<std::string, exception_factory>& {
  static const std::map<std::string, exception_factory> table = {
      {typeid(std::logic_error).name(), &make_std<std::logic_error>},
      {typeid(std::invalid_argument).name(), &make_std<std::invalid_argument>},
      {typeid(std::domain_error).name(), &make_std<std::domain_error>},
      {typeid(std::length_error).name(), &make_std<std::length_error>},
      {typeid(std::out_of_range).name(), &make_std<std::out_of_range>},
      {typeid(std::runtime_error).name(), &make_std<std::runtime_error>},
      {typeid(std::range_error).name(), &make_std<std::range_error>},
      {typeid(std::overflow_error).name(), &make_std<std::overflow_error>},
      {typeid(std::underflow_error).name(), &make_std<std::underflow_error>},
  };
  return table;
}

auto category_by_name(const std::string& name) -> const std::error_category* {
  if (name == std::generic_category().name()) return &std::generic_category();
  if (name == std::system_category().name()) return &std::system_category();
  if (name == std::iostream_category().name()) return &std::iostream_category();
  if (name == std::future_category().name()) return &std::future_category();
  return nullptr;
}

// std::system_error's what() is "<what_arg>: <message>"; rebuild it from the same parts so the
// parent's what() is the worker's, byte for byte.
class remote_system_error : public std::system_error {
 public:
  remote_system_error(std::error_code ec, std::string what)
      : std::system_error(ec), what_(std::move(what)) {}
  [[nodiscard]] auto what() const noexcept -> const char* override { return what_.c_str(); }

 private:
  std::string what_;
};

auto rebuild_system_error(const exception_envelope& e) -> std::exception_ptr {
  const std::error_category* cat = category_by_name(e.category);
  if (cat == nullptr) return nullptr;
  std::error_code ec(e.code, *cat);
  const std::string message = ec.message();
  if (e.what == message) return std::make_exception_ptr(std::system_error(ec));
  const std::string suffix = ": " + message;
  if (e.what.size() >= suffix.size() &&
      e.what.compare(e.what.size() - suffix.size(), suffix.size(), suffix) == 0) {
    return std::make_exception_ptr(
        std::system_error(ec, e.what.substr(0, e.what.size() - suffix.size())));
  }
  return std::make_exception_ptr(remote_system_error(ec, e.what));
}

}  // namespace

auto register_exception_type(const std::type_info& type, exception_factory make) -> bool {
  auto& r = the_registry();
  std::lock_guard lock(r.mutex);
  r.by_name[type.name()] = make;
  return true;
}

auto demangle(const char* mangled) -> std::string {
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> out(
      abi::__cxa_demangle(mangled, nullptr, nullptr, &status), &std::free);
  return status == 0 && out ? std::string(out.get()) : std::string(mangled);
}

auto describe_current_exception() -> exception_envelope {
  exception_envelope e;
  const std::type_info* type = abi::__cxa_current_exception_type();
  e.type_name = type != nullptr ? type->name() : "";
  try {
    throw;
  } catch (const std::system_error& s) {
    e.what = s.what();
    e.code = s.code().value();
    e.category = s.code().category().name();
  } catch (const std::exception& x) {
    e.what = x.what();
  } catch (...) {
  }
  return e;
}

auto rebuild_exception(const exception_envelope& e, const std::string& function, pid_t pid)
    -> std::exception_ptr {
  if (auto make = find_registered(e.type_name)) return make(e.what);
  const auto& table = std_factories();
  if (auto it = table.find(e.type_name); it != table.end()) return it->second(e.what);
  if (e.type_name == typeid(std::bad_alloc).name())
    return std::make_exception_ptr(std::bad_alloc());
  if (e.type_name == typeid(std::system_error).name()) {
    if (auto ep = rebuild_system_error(e)) return ep;
  }
  std::string shown =
      e.type_name.empty() ? std::string("<unknown>") : demangle(e.type_name.c_str());
  if (!e.category.empty()) shown += " [" + e.category + ":" + std::to_string(e.code) + "]";
  return std::make_exception_ptr(remote_error(std::move(shown), e.what, function, pid));
}

}  // namespace procpool::detail
