#include "core/status.h"

#include <optional>
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace fedsilo {

namespace {

constexpr absl::string_view kShareable = "fedsilo.dev/shareable";
constexpr absl::string_view kDetail = "fedsilo.dev/private-detail";

}  // namespace

Status Annotate(const Status& status, absl::string_view context) {
  if (status.ok()) return status;
  Status out(status.code(), absl::StrCat(context, ": ", status.message()));
  status.ForEachPayload(
      [&](absl::string_view url, const absl::Cord& payload) { out.SetPayload(url, payload); });
  return out;
}

Status Shareable(Status status) {
  if (!status.ok()) status.SetPayload(kShareable, absl::Cord("1"));
  return status;
}

bool IsShareable(const Status& status) {
  return !status.ok() && status.GetPayload(kShareable).has_value();
}

Status DataError(absl::StatusCode code, absl::string_view shared, absl::string_view detail) {
  Status status = Shareable(Status(code, shared));
  status.SetPayload(kDetail, absl::Cord(detail));
  return status;
}

std::string PrivateDetail(const Status& status) {
  const auto detail = status.GetPayload(kDetail);  // absl::optional (C++14 Abseil)
  return detail.has_value() ? std::string(*detail) : std::string();
}

std::string FullMessage(const Status& status) {
  const std::string detail = PrivateDetail(status);
  if (detail.empty()) return std::string(status.message());
  return absl::StrCat(status.message(), " [", detail, "]");
}

bool IsInvalidInput(const Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists:
      return true;
    default:
      return false;
  }
}

}  // namespace fedsilo
