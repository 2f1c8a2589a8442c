#include "secure/psi.h"

#include <sodium.h>

#include <algorithm>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"

namespace fedsilo::secure {
namespace {

static_assert(kPsiPointBytes == crypto_core_ristretto255_BYTES);
static_assert(crypto_core_ristretto255_SCALARBYTES == 32);

// Domain separation: the hash is of this tag, the domain's length and the
// domain, then the id, so no (domain, id) pair hashes as another.
constexpr char kHashTag[] = "fedsilo-psi-v1";

void HashToGroup(absl::string_view domain, absl::string_view id, unsigned char* point) {
  crypto_hash_sha512_state state;
  crypto_hash_sha512_init(&state);
  crypto_hash_sha512_update(&state, reinterpret_cast<const unsigned char*>(kHashTag),
                            sizeof(kHashTag));  // with its NUL: the tag ends here
  unsigned char length[8];
  uint64_t n = domain.size();
  for (unsigned char& byte : length) {
    byte = static_cast<unsigned char>(n & 0xff);
    n >>= 8;
  }
  crypto_hash_sha512_update(&state, length, sizeof(length));
  crypto_hash_sha512_update(&state, reinterpret_cast<const unsigned char*>(domain.data()),
                            domain.size());
  crypto_hash_sha512_update(&state, reinterpret_cast<const unsigned char*>(id.data()), id.size());
  unsigned char digest[crypto_hash_sha512_BYTES];
  crypto_hash_sha512_final(&state, digest);
  sodium_memzero(&state, sizeof(state));
  static_assert(sizeof(digest) == crypto_core_ristretto255_HASHBYTES);
  crypto_core_ristretto255_from_hash(point, digest);
  sodium_memzero(digest, sizeof(digest));
}

}  // namespace

PsiParty::PsiParty(std::string domain) : domain_(std::move(domain)) {}

StatusOr<PsiParty> PsiParty::Create(std::string domain) {
  if (sodium_init() < 0) return absl::InternalError("libsodium did not start");
  PsiParty party(std::move(domain));
  // A random scalar in ]0, L[: never zero, so no point is sent to the identity.
  crypto_core_ristretto255_scalar_random(party.scalar_.data());
  return party;
}

PsiParty::PsiParty(PsiParty&& other) noexcept
    : domain_(std::move(other.domain_)), scalar_(other.scalar_) {
  sodium_memzero(other.scalar_.data(), other.scalar_.size());
}

PsiParty& PsiParty::operator=(PsiParty&& other) noexcept {
  if (this != &other) {
    domain_ = std::move(other.domain_);
    scalar_ = other.scalar_;
    sodium_memzero(other.scalar_.data(), other.scalar_.size());
  }
  return *this;
}

PsiParty::~PsiParty() { sodium_memzero(scalar_.data(), scalar_.size()); }

Status PsiParty::CheckScalar() const {
  if (sodium_is_zero(scalar_.data(), scalar_.size())) {
    return absl::FailedPreconditionError("this PSI party was moved from: its scalar is gone");
  }
  return absl::OkStatus();
}

StatusOr<std::string> PsiParty::Blind(const std::vector<std::string>& ids) const {
  FEDSILO_RETURN_IF_ERROR(CheckScalar());
  std::string out(ids.size() * kPsiPointBytes, '\0');
  unsigned char hashed[kPsiPointBytes];
  Status failed;
  for (size_t i = 0; i < ids.size() && failed.ok(); ++i) {
    HashToGroup(domain_, ids[i], hashed);
    auto* blinded = reinterpret_cast<unsigned char*>(out.data() + i * kPsiPointBytes);
    // Only an id hashed to the identity fails here, with negligible
    // probability; it must not travel as the identity.
    if (crypto_scalarmult_ristretto255(blinded, scalar_.data(), hashed) != 0) {
      failed = absl::InternalError(
          absl::StrCat("id ", i + 1, " of ", ids.size(), " hashes to the group's identity"));
    }
  }
  sodium_memzero(hashed, sizeof(hashed));
  if (!failed.ok()) return failed;
  return out;
}

StatusOr<std::string> PsiParty::Reblind(absl::string_view points) const {
  FEDSILO_RETURN_IF_ERROR(CheckScalar());
  if (points.size() % kPsiPointBytes != 0) {
    return absl::InvalidArgumentError(absl::StrCat("blinded ids: ", points.size(),
                                                   " bytes is not a whole number of ",
                                                   kPsiPointBytes, "-byte points"));
  }
  std::string out(points.size(), '\0');
  const size_t count = points.size() / kPsiPointBytes;
  for (size_t i = 0; i < count; ++i) {
    const auto* in = reinterpret_cast<const unsigned char*>(points.data() + i * kPsiPointBytes);
    auto* blinded = reinterpret_cast<unsigned char*>(out.data() + i * kPsiPointBytes);
    // Checked first: scalarmult refuses a non-canonical encoding and the
    // identity, but a refusal should say which point it was.
    if (crypto_core_ristretto255_is_valid_point(in) != 1 ||
        crypto_scalarmult_ristretto255(blinded, scalar_.data(), in) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("blinded ids: point ", i + 1, " of ", count,
                                                     " is not a point of the group"));
    }
  }
  return out;
}

std::string PsiHashToGroup(absl::string_view domain, absl::string_view id) {
  if (sodium_init() < 0) return std::string();
  std::string point(kPsiPointBytes, '\0');
  HashToGroup(domain, id, reinterpret_cast<unsigned char*>(point.data()));
  return point;
}

StatusOr<std::vector<std::vector<int64_t>>> IntersectBlinded(
    const std::vector<absl::string_view>& sets) {
  if (sets.empty()) return std::vector<std::vector<int64_t>>();
  // Each party's points, with the row each stands for.
  std::vector<std::unordered_map<std::string_view, int64_t>> rows_of(sets.size());
  for (size_t p = 0; p < sets.size(); ++p) {
    const absl::string_view set = sets[p];
    if (set.size() % kPsiPointBytes != 0) {
      return absl::InvalidArgumentError(absl::StrCat("party ", p + 1, ": ", set.size(),
                                                     " bytes is not a whole number of points"));
    }
    const size_t count = set.size() / kPsiPointBytes;
    rows_of[p].reserve(count);
    for (size_t i = 0; i < count; ++i) {
      const std::string_view point(set.data() + i * kPsiPointBytes, kPsiPointBytes);
      if (!rows_of[p].emplace(point, static_cast<int64_t>(i)).second) {
        // Not which rows: the set may come from elsewhere, and its rows are
        // its owner's to name (a party checks its ids before blinding them).
        return absl::InvalidArgumentError(absl::StrCat("party ", p + 1, " holds an id twice"));
      }
    }
  }
  // The smallest set's points that every other set holds, in byte order.
  const size_t smallest =
      static_cast<size_t>(std::min_element(sets.begin(), sets.end(),
                                           [](absl::string_view a, absl::string_view b) {
                                             return a.size() < b.size();
                                           }) -
                          sets.begin());
  std::vector<std::string_view> common;
  for (const auto& [point, row] : rows_of[smallest]) {
    bool everywhere = true;
    for (size_t p = 0; p < sets.size() && everywhere; ++p) {
      everywhere = p == smallest || rows_of[p].count(point) == 1;
    }
    if (everywhere) common.push_back(point);
  }
  std::sort(common.begin(), common.end());
  std::vector<std::vector<int64_t>> rows(sets.size());
  for (size_t p = 0; p < sets.size(); ++p) {
    rows[p].reserve(common.size());
    for (std::string_view point : common) rows[p].push_back(rows_of[p].at(point));
  }
  return rows;
}

}  // namespace fedsilo::secure
