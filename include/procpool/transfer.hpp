// procpool - which types can cross the process boundary, and how to make your own type cross it.
//
// Arguments and results travel as cereal binary archives. Supported without any work on your part:
// arithmetic types, enums, trivially copyable structs (sent as their bytes), std::string,
// std::vector, std::map, std::unordered_map, std::set, std::optional, std::pair, std::tuple,
// std::variant, std::array and any nesting of these. procpool::shared_bytes (shared_bytes.hpp) is a
// parameter type that reads large byte buffers in place in the worker.
//
// The one customization point for other types is cereal's: give the type a member
//
//     template <class Archive> void serialize(Archive& ar) { ar(field_a, field_b); }
//
// (or a non-member serialize/save/load found by ADL). procpool::transferable<T> tells whether a
// type qualifies; submitting a function whose parameter or result does not is a compile-time error.
#pragma once

#include <cereal/types/array.hpp>
#include <cereal/types/chrono.hpp>
#include <cereal/types/complex.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/set.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/unordered_set.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/variant.hpp>
#include <cereal/types/vector.hpp>
#include <cstddef>
#include <type_traits>
#include <vector>

#include "procpool/detail/archive.hpp"
#include "procpool/shared_bytes.hpp"

namespace procpool::detail {

// Standard class templates that cereal already knows; the raw-bytes rule below must not compete
// with cereal's own overloads for them, even when they happen to be trivially copyable.
template <class T>
inline constexpr bool is_cereal_std_type_v = false;
template <class T, std::size_t N>
inline constexpr bool is_cereal_std_type_v<std::array<T, N>> = true;
template <class T>
inline constexpr bool is_cereal_std_type_v<std::complex<T>> = true;
template <class T>
inline constexpr bool is_cereal_std_type_v<std::optional<T>> = true;
template <class A, class B>
inline constexpr bool is_cereal_std_type_v<std::pair<A, B>> = true;
template <class... T>
inline constexpr bool is_cereal_std_type_v<std::tuple<T...>> = true;
template <class... T>
inline constexpr bool is_cereal_std_type_v<std::variant<T...>> = true;
template <class R, class P>
inline constexpr bool is_cereal_std_type_v<std::chrono::duration<R, P>> = true;
template <class C, class D>
inline constexpr bool is_cereal_std_type_v<std::chrono::time_point<C, D>> = true;
// cereal's own wrappers, which it serializes itself.
template <class T>
inline constexpr bool is_cereal_std_type_v<cereal::BinaryData<T>> = true;
template <class T>
inline constexpr bool is_cereal_std_type_v<cereal::SizeTag<T>> = true;
template <class T>
inline constexpr bool is_cereal_std_type_v<cereal::NameValuePair<T>> = true;
template <class K, class V>
inline constexpr bool is_cereal_std_type_v<cereal::MapItem<K, V>> = true;
template <class T>
inline constexpr bool is_cereal_std_type_v<cereal::DeferredData<T>> = true;

template <class T, class Out = byte_output_archive, class In = byte_input_archive>
inline constexpr bool has_member_serialization_v =
    cereal::traits::has_member_serialize<T, Out>::value ||
    cereal::traits::has_member_versioned_serialize<T, Out>::value ||
    cereal::traits::has_member_save<T, Out>::value ||
    cereal::traits::has_member_versioned_save<T, Out>::value ||
    cereal::traits::has_member_save_minimal<T, Out>::value ||
    cereal::traits::has_member_load<T, In>::value;

/// A class sent as its object representation: trivially copyable, not a standard type cereal knows,
/// and without its own member serialization.
template <class T>
concept plain_bytes =
    std::is_trivially_copyable_v<T> && std::is_class_v<T> && !is_cereal_std_type_v<T> &&
    !has_member_serialization_v<T>;

}  // namespace procpool::detail

namespace cereal {

// Found by ADL through cereal's archive types: trivially copyable structs need no serialize().
template <class Archive, procpool::detail::plain_bytes T>
void CEREAL_SERIALIZE_FUNCTION_NAME(Archive& ar, T& value) {
  ar(cereal::binary_data(&value, sizeof(T)));
}

// Contiguous byte buffers are copied in one piece (cereal would go element by element).
template <class Alloc>
void CEREAL_SAVE_FUNCTION_NAME(procpool::detail::byte_output_archive& ar,
                               const std::vector<std::byte, Alloc>& v) {
  ar(make_size_tag(static_cast<size_type>(v.size())));
  ar(binary_data(v.data(), v.size()));
}
template <class Alloc>
void CEREAL_LOAD_FUNCTION_NAME(procpool::detail::byte_input_archive& ar,
                               std::vector<std::byte, Alloc>& v) {
  size_type size{};
  ar(make_size_tag(size));
  v.resize(static_cast<std::size_t>(size));
  ar(binary_data(v.data(), v.size()));
}

// A shared_bytes argument is written like a std::vector<std::byte> (so either can be sent to a
// parameter of the other type) and read as a view of the bytes where they are.
inline void CEREAL_SAVE_FUNCTION_NAME(procpool::detail::byte_output_archive& ar,
                                      const procpool::shared_bytes& b) {
  ar(make_size_tag(static_cast<size_type>(b.size())));
  ar(binary_data(b.data(), b.size()));
}
inline void CEREAL_LOAD_FUNCTION_NAME(procpool::detail::byte_input_archive& ar,
                                      procpool::shared_bytes& b) {
  size_type size{};
  ar(make_size_tag(size));
  b = procpool::shared_bytes(ar.take_view(static_cast<std::size_t>(size)));
}

}  // namespace cereal

namespace procpool {

/// True for types that can be a task's argument or result (see the top of this header).
template <class T>
concept transferable = std::is_void_v<T> ||
    (!std::is_pointer_v<std::decay_t<T>> && std::is_default_constructible_v<std::decay_t<T>> &&
     cereal::traits::is_output_serializable<std::decay_t<T>, detail::byte_output_archive>::value &&
     cereal::traits::is_input_serializable<std::decay_t<T>, detail::byte_input_archive>::value);

}  // namespace procpool
