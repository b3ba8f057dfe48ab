#include "dashboard.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

namespace service {

// Generated from apps/service/dashboard/ by cmake/embed_files.cmake.
auto embedded_files() -> const std::vector<std::pair<std::string_view, std::string_view>>&;

namespace {

auto content_type_of(std::string_view name) -> std::string_view {
  const auto dot = name.rfind('.');
  const std::string_view ext = dot == std::string_view::npos ? "" : name.substr(dot + 1);
  if (ext == "html") return "text/html; charset=utf-8";
  if (ext == "js") return "text/javascript; charset=utf-8";
  if (ext == "css") return "text/css; charset=utf-8";
  if (ext == "svg") return "image/svg+xml";
  if (ext == "png") return "image/png";
  if (ext == "json") return "application/json";
  return "application/octet-stream";
}

auto plain_name(std::string_view name) -> bool {
  return !name.empty() && name.front() != '.' && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
  });
}

}  // namespace

auto dashboard_files::find(std::string_view name) const -> std::optional<static_file> {
  if (!plain_name(name)) return std::nullopt;
  if (directory_.empty()) {
    for (const auto& [file, bytes] : embedded_files()) {
      if (file == name) return static_file{std::string(bytes), content_type_of(name)};
    }
    return std::nullopt;
  }
  std::ifstream in(directory_ + "/" + std::string(name), std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream body;
  body << in.rdbuf();
  return static_file{std::move(body).str(), content_type_of(name)};
}

}  // namespace service
