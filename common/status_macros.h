// Status propagation macros. Debian's Abseil (20220623) has no
// RETURN_IF_ERROR / ASSIGN_OR_RETURN, so podtrain keeps this one small pair,
// plus a helper that adds context to an error as it travels up.
//
// Thread-safety: macros and free functions only; no shared state.

#ifndef PODTRAIN_COMMON_STATUS_MACROS_H_
#define PODTRAIN_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace podtrain {

// Returns `status` with "context: " prepended to its message, same code.
// OK stays OK.
inline absl::Status WithContext(const absl::Status& status,
                                absl::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(),
                      absl::StrCat(context, ": ", status.message()));
}

}  // namespace podtrain

#define PODTRAIN_STATUS_CONCAT_INNER_(x, y) x##y
#define PODTRAIN_STATUS_CONCAT_(x, y) PODTRAIN_STATUS_CONCAT_INNER_(x, y)

// Evaluates `expr` (an absl::Status) and returns it from the enclosing
// function if it is not OK.
#define RETURN_IF_ERROR(expr)                         \
  do {                                                \
    const ::absl::Status podtrain_status_ = (expr);   \
    if (ABSL_PREDICT_FALSE(!podtrain_status_.ok())) { \
      return podtrain_status_;                        \
    }                                                 \
  } while (false)

// `ASSIGN_OR_RETURN(auto x, F());` evaluates F() (an absl::StatusOr<T>); on
// error returns its status from the enclosing function, otherwise moves the
// value into `lhs`, which may be a declaration.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  PODTRAIN_ASSIGN_OR_RETURN_IMPL_(   \
      PODTRAIN_STATUS_CONCAT_(podtrain_statusor_, __LINE__), lhs, rexpr)

#define PODTRAIN_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                    \
  if (ABSL_PREDICT_FALSE(!statusor.ok())) {                   \
    return std::move(statusor).status();                      \
  }                                                           \
  lhs = std::move(statusor).value()

#endif  // PODTRAIN_COMMON_STATUS_MACROS_H_
