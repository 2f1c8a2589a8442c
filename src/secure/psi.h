// Private set intersection (PSI) by ECDH over ristretto255 (libsodium), for
// vertical jobs: parties that hold different columns about the same people
// find the people they share without showing each other anyone else.
//
// Each party hashes its ids to the group, bound to a domain (the job), and
// raises them to its own secret scalar; every other party raises them again
// to its own. An id's point after every party's scalar, H(id)^(a·b·…), is the
// same whichever party's set it came from, and says nothing of the id to
// anyone who lacks a scalar: only points travel, never an id, its hash or a
// scalar.
//
// What each side learns: the parties, the intersection's size and their own
// rows in it (in one order shared by all); whoever holds every party's fully
// blinded set (the orchestrator, in fedsilo) also learns how many ids any two
// parties share. A party chooses its own set, so it can always test ids it
// guesses by putting them in; that is the nature of PSI.
//
// Thread safety: a PsiParty does not change after Create(); its methods may
// be called from several threads at once. Its scalar is wiped when it goes.
#ifndef FEDSILO_SECURE_PSI_H_
#define FEDSILO_SECURE_PSI_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "core/status.h"

namespace fedsilo::secure {

// A point of ristretto255, as it travels.
inline constexpr size_t kPsiPointBytes = 32;

class PsiParty {
 public:
  // A party with a fresh secret scalar, for `domain` (e.g. the job's id: the
  // points of one job cannot be matched against another's). Internal when
  // libsodium cannot start.
  static StatusOr<PsiParty> Create(std::string domain);
  PsiParty(PsiParty&& other) noexcept;
  PsiParty& operator=(PsiParty&& other) noexcept;
  PsiParty(const PsiParty&) = delete;
  PsiParty& operator=(const PsiParty&) = delete;
  ~PsiParty();

  // H(id)^a for every id, kPsiPointBytes each, in the order of `ids`.
  // FailedPrecondition on a party moved from (its scalar is gone).
  StatusOr<std::string> Blind(const std::vector<std::string>& ids) const;
  // p^a for every point p of `points` (another party's, blinded by one or
  // more scalars), in order. InvalidArgument when `points` is not a whole
  // number of points, or holds one that is not a point of the group or is
  // its identity (naming its position; never its bytes); FailedPrecondition
  // as for Blind().
  //
  // It raises whatever points it is given, so whoever may send it points can
  // test guessed ids against this party's set. The protocol around it must
  // take points only from the job's parties (signed by them, not just
  // relayed), once per party, in sets of a size the party's policy allows.
  StatusOr<std::string> Reblind(absl::string_view points) const;

  const std::string& domain() const { return domain_; }

 private:
  explicit PsiParty(std::string domain);
  Status CheckScalar() const;
  std::string domain_;
  std::array<unsigned char, 32> scalar_{};
};

// H(id) for `domain`: the unblinded point of an id (empty if libsodium
// cannot start). Never sent; for tests and audits that check that no
// relayed byte is one.
std::string PsiHashToGroup(absl::string_view domain, absl::string_view id);

// The intersection of `sets`: each the fully blinded ids of one party (every
// party's scalar applied), in that party's row order. Returns, for each party,
// the rows of its ids that are in every set, all in one shared order (the
// blinded points' byte order, which no party chooses). InvalidArgument, naming
// the party by its position, for a set that is not a whole number of points or
// that holds a point twice (an id held twice).
StatusOr<std::vector<std::vector<int64_t>>> IntersectBlinded(
    const std::vector<absl::string_view>& sets);

}  // namespace fedsilo::secure

#endif  // FEDSILO_SECURE_PSI_H_
