// libFuzzer target: arbitrary bytes as they would arrive on one worker's channel, fed through the
// checks and decoders the pool runs on them (src/frame_check.cpp, then the public layer's result
// decoding). Whatever the bytes, the parent must neither crash, hang, leak nor allocate without
// bound: each frame is accepted, refused as that worker's violation, or fails its task with
// serialization_error. Run with scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "frame_check.hpp"
#include "procpool/detail/codec.hpp"

namespace {

using namespace procpool::detail;

// The build id the corpus's hello frames carry (fuzz/make_corpus.py).
constexpr std::string_view fuzz_build_id = "0123456789abcdef";

struct shape {
  std::string name;
  std::vector<std::uint16_t> points;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, points);
  }
};

// The public layer decodes a result into the task's declared type; a spread of shapes.
void decode_result(std::span<const std::byte> payload, std::uint64_t task) {
  try {
    switch (task % 6) {
      case 0: {
        std::string s;
        decode_from(payload, s);
        break;
      }
      case 1: {
        std::vector<std::byte> v;
        decode_from(payload, v);
        break;
      }
      case 2: {
        std::map<std::string, std::vector<double>> m;
        decode_from(payload, m);
        break;
      }
      case 3: {
        std::tuple<std::optional<std::string>, std::variant<int, std::string, shape>> t;
        decode_from(payload, t);
        break;
      }
      case 4: {
        std::vector<std::vector<shape>> v;
        decode_from(payload, v);
        break;
      }
      default: {
        long long x = 0;
        decode_from(payload, x);
        break;
      }
    }
  } catch (const procpool::serialization_error&) {
    // What the caller of that task gets; the pool goes on.
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::span<const std::byte> rest(reinterpret_cast<const std::byte*>(data), size);
  channel_state state{false, 0, std::size_t{1} << 20, false};
  std::uint64_t next_task = 1;
  while (rest.size() >= sizeof(frame_header)) {
    frame_header h;
    std::memcpy(&h, rest.data(), sizeof h);
    rest = rest.subspan(sizeof h);
    if (!check_header(h, state).empty()) return 0;  // violation: the worker is killed
    if (h.size > rest.size()) return 0;  // the channel ends mid-frame: the worker's crash
    const auto payload = rest.first(static_cast<std::size_t>(h.size));
    rest = rest.subspan(static_cast<std::size_t>(h.size));
    switch (h.kind) {
      case frame_kind::hello:
        if (!check_hello(payload, fuzz_build_id).empty()) return 0;
        state.greeted = true;
        break;
      case frame_kind::result:
        decode_result(payload, h.task_id);
        break;
      case frame_kind::exception: {
        std::string wrong;
        auto ep = decode_exception(payload, "fuzzed_task", 4242, wrong);
        if (!ep) return 0;
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          volatile std::size_t n = std::strlen(e.what());
          (void)n;
        }
        break;
      }
      case frame_kind::skipped:
        break;
      case frame_kind::progress: {
        procpool::progress p;
        if (!decode_progress(payload, p).empty()) return 0;
        continue;  // the task goes on running
      }
      default:
        return 0;
    }
    // The pool hands the worker its next task after each hello or outcome, and asks it to skip
    // every third one (a cancelled task sent ahead).
    state.running_task = next_task++;
    state.skip_asked = state.running_task % 3 == 0;
  }
  return 0;
}
