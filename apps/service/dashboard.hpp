// procpool-service - the dashboard's static files: compiled into the binary (the service works
// offline, from one file), or read from a directory while the page is being worked on.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace service {

struct static_file {
  std::string body;
  std::string_view content_type;
};

class dashboard_files {
 public:
  /// `directory` empty: the files compiled in; else files are read from there on each request.
  explicit dashboard_files(std::string directory = {}) : directory_(std::move(directory)) {}

  /// The file called `name` (a plain file name: no '/', no leading '.'), or nullopt.
  [[nodiscard]] auto find(std::string_view name) const -> std::optional<static_file>;

 private:
  std::string directory_;
};

}  // namespace service
