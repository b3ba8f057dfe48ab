// procpool-service token create|list|revoke: managing API tokens from the command line, on the
// database the service uses (tokens.hpp).
#pragma once

namespace service {

/// `argv[0]` is "token". Prints what it did on stdout (a new token: the only time it is shown),
/// errors on stderr; returns the exit status.
auto run_token_command(int argc, char** argv) -> int;

}  // namespace service
