#include "token_command.hpp"

#include <cstdio>
#include <ctime>
#include <stdexcept>
#include <string>
#include <vector>

#include "config.hpp"
#include "store.hpp"
#include "tokens.hpp"

namespace service {

namespace {

constexpr int exit_ok = 0;
constexpr int exit_failed = 1;
constexpr int exit_usage = 2;

void usage() {
  std::printf(
      "usage: procpool-service token create --scope read|submit|admin [--name NAME] [--db ...]\n"
      "       procpool-service token list [--db ...]\n"
      "       procpool-service token revoke ID [--db ...]\n\n"
      "Tokens live in the service's database (--db or PROCPOOL_SERVICE_DB, as for serving): every\n"
      "instance on a shared PostgreSQL database accepts them. Scopes: read (GET endpoints and\n"
      "/events), submit (also POST /jobs), admin (also cancel and retry). create prints the token\n"
      "once; only its hash is stored. A revoked token is refused by every instance within\n"
      "--token-cache-ms (5 s by default).\n");
}

auto utc(std::int64_t ms) -> std::string {
  if (ms == 0) return "-";
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

}  // namespace

auto run_token_command(int argc, char** argv) -> int {
  std::string action, id_text, name, scope_text;
  // What is not the command's own goes to the service's flag parser (--db, --sync, ...).
  std::vector<char*> rest = {argv[0]};
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      const auto value = [&](const std::string& flag) -> std::string {
        if (arg.starts_with(flag + "=")) return arg.substr(flag.size() + 1);
        if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value");
        return argv[++i];
      };
      if (arg == "--help" || arg == "-h") {
        usage();
        return exit_ok;
      } else if (arg == "--scope" || arg.starts_with("--scope=")) {
        scope_text = value("--scope");
      } else if (arg == "--name" || arg.starts_with("--name=")) {
        name = value("--name");
      } else if (!arg.starts_with("--") && action.empty()) {
        action = arg;
      } else if (!arg.starts_with("--") && action == "revoke" && id_text.empty()) {
        id_text = arg;
      } else {
        rest.push_back(argv[i]);
        // A flag's separate value goes with it.
        if (arg.starts_with("--") && arg.find('=') == std::string::npos && i + 1 < argc &&
            !std::string_view(argv[i + 1]).starts_with("--")) {
          rest.push_back(argv[++i]);
        }
      }
    }
    if (action != "create" && action != "list" && action != "revoke") {
      throw std::invalid_argument("expected create, list or revoke (see token --help)");
    }
    const auto cfg = parse_config(static_cast<int>(rest.size()), rest.data());
    if (!cfg) return exit_ok;
    std::optional<token_scope> scope;
    if (action == "create") {
      scope = parse_scope(scope_text);
      if (!scope) throw std::invalid_argument("token create needs --scope read, submit or admin");
    }
    std::int64_t id = 0;
    if (action == "revoke") {
      try {
        id = std::stoll(id_text);
      } catch (const std::exception&) {
        throw std::invalid_argument("token revoke needs the token's id (see token list)");
      }
    }
    if (action != "create" && (!name.empty() || !scope_text.empty())) {
      throw std::invalid_argument("--scope and --name are for token create");
    }

    store st(open_sql_connection(cfg->db, {.application_name = "procpool-service token",
                                           .sqlite_full_sync = cfg->full_sync}),
             false);
    if (action == "create") {
      const std::string token = create_token(st.sql(), *scope, name);
      std::printf("%s\n", token.c_str());
      std::fprintf(stderr,
                   "procpool-service: token created with scope %s; it is shown this once (only "
                   "its hash is stored): send it as Authorization: Bearer <token>\n",
                   scope_name(*scope));
    } else if (action == "list") {
      std::printf("%-6s %-8s %-22s %-22s %s\n", "id", "scope", "created", "revoked", "name");
      for (const auto& t : list_tokens(st.sql())) {
        std::printf("%-6lld %-8s %-22s %-22s %s\n", static_cast<long long>(t.id),
                    scope_name(t.scope), utc(t.created_ms).c_str(), utc(t.revoked_ms).c_str(),
                    t.name.empty() ? "-" : t.name.c_str());
      }
    } else {
      if (!revoke_token(st.sql(), id)) {
        std::fprintf(stderr, "procpool-service: no token %lld, or it was already revoked\n",
                     static_cast<long long>(id));
        return exit_failed;
      }
      std::printf("token %lld revoked\n", static_cast<long long>(id));
    }
    return exit_ok;
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "procpool-service token: %s\n", e.what());
    return exit_usage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "procpool-service token: %s\n", e.what());
    return exit_failed;
  }
}

}  // namespace service
