#include "secure/storage_keys.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/file_util.h"

namespace fedsilo::secure {
namespace {

std::string ToBase64(const Key32& key) {
  char out[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_ORIGINAL)];
  sodium_bin2base64(out, sizeof(out), key.data(), key.size(), sodium_base64_VARIANT_ORIGINAL);
  return out;
}

StatusOr<Key32> FromBase64(const std::string& text, absl::string_view what) {
  Key32 key;
  size_t length = 0;
  if (sodium_base642bin(key.data(), key.size(), text.data(), text.size(), " \n", &length, nullptr,
                        sodium_base64_VARIANT_ORIGINAL) != 0 ||
      length != key.size()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": not the base64 of a 32-byte key"));
  }
  return key;
}

std::string NewKeyId() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char date[16];
  std::strftime(date, sizeof(date), "%Y%m%d", &tm);
  const Key32 random = RandomKey32();
  char hex[9];
  sodium_bin2hex(hex, sizeof(hex), random.data(), 4);
  return absl::StrCat("k-", date, "-", hex);
}

}  // namespace

KeyRing NewKeyRing() {
  KeyRing ring;
  AddKey(ring);
  return ring;
}

std::string AddKey(KeyRing& ring) {
  std::string id;
  do {
    id = NewKeyId();
  } while (ring.keys.count(id) > 0);
  ring.keys[id] = RandomKey32();
  ring.current = id;
  return id;
}

StatusOr<KeyRing> LoadKeyRing(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(path, ": no such storage key ring"));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the storage key ring may be read by others (mode ",
                     absl::StrFormat("%04o", st.st_mode & 0777), "); run chmod 600 on it"));
  }
  FEDSILO_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid YAML: ", e.what()));
  }
  if (!root.IsMap() || !root["keys"] || !root["keys"].IsMap() || !root["current"] ||
      !root["current"].IsScalar()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": a storage key ring needs 'current' and a 'keys' mapping"));
  }
  if (root["version"] && root["version"].as<std::string>() != "1") {
    return absl::InvalidArgumentError(absl::StrCat(path, ": key ring version ",
                                                   root["version"].as<std::string>(),
                                                   " is newer than this fedsilo reads (1)"));
  }
  KeyRing ring;
  ring.current = root["current"].as<std::string>();
  for (const auto& entry : root["keys"]) {
    const std::string id = entry.first.as<std::string>();
    if (!entry.second.IsScalar()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": keys.", id, ": must be base64"));
    }
    FEDSILO_ASSIGN_OR_RETURN(ring.keys[id],
                             FromBase64(entry.second.Scalar(), absl::StrCat(path, ": keys.", id)));
  }
  if (ring.keys.count(ring.current) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": current key '", ring.current, "' is not under 'keys'"));
  }
  return ring;
}

Status SaveKeyRing(const KeyRing& ring, const std::string& path) {
  YAML::Emitter out;
  out << YAML::Comment("fedsilo storage key ring: keep it secret (mode 0600) and backed up");
  out << YAML::BeginMap;
  out << YAML::Key << "version" << YAML::Value << 1;
  out << YAML::Key << "current" << YAML::Value << ring.current;
  out << YAML::Key << "keys" << YAML::Value << YAML::BeginMap;
  for (const auto& [id, key] : ring.keys) out << YAML::Key << id << YAML::Value << ToBase64(key);
  out << YAML::EndMap << YAML::EndMap;
  const std::string text = std::string(out.c_str()) + "\n";
  // Missing folders are made private; an existing one is left as it is.
  const std::string folder = std::filesystem::path(path).parent_path().string();
  std::error_code ec;
  if (!folder.empty() && !std::filesystem::exists(folder, ec)) {
    FEDSILO_RETURN_IF_ERROR(MakePrivateDir(folder));
  }
  return WriteFileAtomically(path, text);
}

StatusOr<std::optional<KeyRing>> ConfiguredKeyRing(const std::string& flag_path) {
  std::string path = flag_path;
  if (path.empty()) {
    const char* env = std::getenv(kStorageKeysEnv);
    if (env != nullptr && *env != '\0') path = env;
  }
  if (!path.empty()) {
    StatusOr<KeyRing> ring = LoadKeyRing(path);
    if (!ring.ok()) return ring.status();
    return std::optional<KeyRing>(std::move(ring).value());
  }
  const char* key = std::getenv(kStorageKeyEnv);
  if (key == nullptr || *key == '\0') return std::optional<KeyRing>();
  FEDSILO_ASSIGN_OR_RETURN(Key32 k, FromBase64(key, kStorageKeyEnv));
  const Key32 digest = Commit(k, "fedsilo storage key id");
  char hex[9];
  sodium_bin2hex(hex, sizeof(hex), digest.data(), 4);
  KeyRing ring;
  ring.current = absl::StrCat("env-", hex);
  ring.keys[ring.current] = k;
  return std::optional<KeyRing>(std::move(ring));
}

namespace {

// The associated data of a sealed file: its header, then (format 2) the name
// it is bound to.
std::string AssociatedData(absl::string_view header, uint8_t version, absl::string_view name) {
  std::string ad(header);
  if (version >= 2) ad.append(name.data(), name.size());
  return ad;
}

}  // namespace

std::string AeadFileSealer::Seal(absl::string_view plaintext, absl::string_view name) const {
  InitCrypto();
  std::string header(kSealedMagic);
  header.push_back(static_cast<char>(kSealedFormatVersion));
  header.push_back(static_cast<char>(ring_.current.size()));
  header += ring_.current;
  std::string nonce(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, '\0');
  randombytes_buf(nonce.data(), nonce.size());
  header += nonce;
  const std::string ad = AssociatedData(header, kSealedFormatVersion, name);
  std::string out = header;
  out.resize(header.size() + plaintext.size() + crypto_aead_xchacha20poly1305_ietf_ABYTES);
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(
      reinterpret_cast<unsigned char*>(out.data() + header.size()), &written,
      reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size(),
      reinterpret_cast<const unsigned char*>(ad.data()), ad.size(), nullptr,
      reinterpret_cast<const unsigned char*>(nonce.data()), ring_.keys.at(ring_.current).data());
  out.resize(header.size() + written);
  return out;
}

StatusOr<SealedHeader> AeadFileSealer::HeaderOf(absl::string_view sealed,
                                                absl::string_view source) {
  const size_t fixed = kSealedMagic.size() + 2;
  if (!IsSealed(sealed) || sealed.size() < fixed) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not an encrypted fedsilo file"));
  }
  SealedHeader h;
  h.version = static_cast<uint8_t>(sealed[kSealedMagic.size()]);
  if (h.version < 1 || h.version > kSealedFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": encrypted with format version ",
                                                   h.version, ", newer than this fedsilo reads (",
                                                   kSealedFormatVersion, ")"));
  }
  const size_t id_length = static_cast<uint8_t>(sealed[kSealedMagic.size() + 1]);
  if (sealed.size() < fixed + id_length + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES +
                          crypto_aead_xchacha20poly1305_ietf_ABYTES) {
    return absl::DataLossError(absl::StrCat(source, ": truncated encrypted file"));
  }
  h.key_id = std::string(sealed.substr(fixed, id_length));
  h.size = fixed + id_length + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
  return h;
}

StatusOr<std::string> AeadFileSealer::KeyIdOf(absl::string_view sealed, absl::string_view source) {
  FEDSILO_ASSIGN_OR_RETURN(SealedHeader h, HeaderOf(sealed, source));
  return h.key_id;
}

StatusOr<std::string> AeadFileSealer::Open(absl::string_view sealed, absl::string_view name,
                                           absl::string_view source) const {
  FEDSILO_ASSIGN_OR_RETURN(SealedHeader h, HeaderOf(sealed, source));
  if (h.version < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": encrypted in format ", h.version,
        ", which does not bind a file to its name; re-encrypt the folder with `fedsilo keys "
        "rotate RING DIR`"));
  }
  return OpenAnyVersion(sealed, name, source);
}

StatusOr<std::string> AeadFileSealer::OpenAnyVersion(absl::string_view sealed,
                                                     absl::string_view name,
                                                     absl::string_view source) const {
  InitCrypto();
  FEDSILO_ASSIGN_OR_RETURN(SealedHeader h, HeaderOf(sealed, source));
  const auto key = ring_.keys.find(h.key_id);
  if (key == ring_.keys.end()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": encrypted with storage key '",
                                                   h.key_id, "', which this key ring does not hold"));
  }
  const std::string ad = AssociatedData(sealed.substr(0, h.size), h.version, name);
  const auto* bytes = reinterpret_cast<const unsigned char*>(sealed.data());
  std::string plain(sealed.size() - h.size, '\0');
  unsigned long long written = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          reinterpret_cast<unsigned char*>(plain.data()), &written, nullptr, bytes + h.size,
          sealed.size() - h.size, reinterpret_cast<const unsigned char*>(ad.data()), ad.size(),
          bytes + h.size - crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
          key->second.data()) != 0) {
    sodium_memzero(plain.data(), plain.size());
    return absl::DataLossError(absl::StrCat(
        source, ": encrypted file fails authentication under key '", h.key_id,
        "': it was altered or truncated, or it is another file put in the place of '", name,
        "' (or the key is not the one it was sealed with)"));
  }
  plain.resize(written);
  return plain;
}

namespace {

// One record (a whole file's bytes or one line) under the ring's current key,
// or nullopt when it already is. Sealed ones are opened first (format 1 too);
// plain ones are sealed only with `seal_plain`.
StatusOr<std::optional<std::string>> Reseal(const AeadFileSealer& sealer, const std::string& bytes,
                                            const std::string& name, const std::string& source,
                                            bool seal_plain, ReencryptStats& stats) {
  if (!IsSealed(bytes)) {
    ++stats.plain;
    if (!seal_plain) return std::optional<std::string>();
    ++stats.reencrypted;
    return std::optional<std::string>(sealer.Seal(bytes, name));
  }
  FEDSILO_ASSIGN_OR_RETURN(SealedHeader header, AeadFileSealer::HeaderOf(bytes, source));
  if (header.key_id == sealer.ring().current && header.version == kSealedFormatVersion) {
    ++stats.current;
    return std::optional<std::string>();
  }
  FEDSILO_ASSIGN_OR_RETURN(std::string plain, sealer.OpenAnyVersion(bytes, name, source));
  std::string resealed = sealer.Seal(plain, name);
  sodium_memzero(plain.data(), plain.size());
  ++stats.reencrypted;
  return std::optional<std::string>(std::move(resealed));
}

}  // namespace

namespace {

// The format version of a sealed record (0 for plain bytes).
uint8_t FormatOf(absl::string_view bytes) {
  return IsSealed(bytes) && bytes.size() > kSealedMagic.size()
             ? static_cast<uint8_t>(bytes[kSealedMagic.size()])
             : 0;
}

// The records of a file kept whole or line by line, as stored (sealed lines
// decoded from base64), for a first look before anything is changed.
StatusOr<std::vector<std::string>> StoredRecords(const std::string& path, Protection protection) {
  FEDSILO_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  if (protection == Protection::kWhole) return std::vector<std::string>{std::move(bytes)};
  std::vector<std::string> records;
  for (absl::string_view line : absl::StrSplit(bytes, '\n', absl::SkipEmpty())) {
    FEDSILO_ASSIGN_OR_RETURN(std::optional<std::string> sealed, SealedBytesOfLine(line, path));
    records.push_back(sealed.has_value() ? *std::move(sealed) : std::string(line));
  }
  return records;
}

}  // namespace

StatusOr<ReencryptStats> ReencryptTree(const std::string& dir, const KeyRing& ring,
                                       bool seal_plain, bool force) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, ": no such folder"));
  }
  // The files to look at, and a first look: a folder whose files are sealed
  // in the current format should hold no plain or older ones. Such a file
  // may have been put there to be sealed as genuine (a plain ledger with an
  // empty budget, an old backup): refused unless `force`, before anything
  // is changed.
  std::vector<std::pair<std::string, Protection>> files;
  for (fs::recursive_directory_iterator it(dir, ec), end; it != end; it.increment(ec)) {
    if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
    if (!it->is_regular_file(ec) || it->path().extension() == ".tmp") continue;
    const std::string path = it->path().string();
    const Protection protection = ProtectionOf(path);
    if (protection != Protection::kNone) files.emplace_back(path, protection);
  }
  bool current_format = false;
  std::vector<std::string> odd;  // plain or older-format files
  for (const auto& [path, protection] : files) {
    FEDSILO_ASSIGN_OR_RETURN(std::vector<std::string> records, StoredRecords(path, protection));
    bool is_odd = false;
    for (const std::string& r : records) {
      const uint8_t format = FormatOf(r);
      if (format == kSealedFormatVersion) current_format = true;
      if (format < kSealedFormatVersion && (format > 0 || seal_plain)) is_odd = true;
    }
    if (is_odd) odd.push_back(path);
  }
  if (current_format && !odd.empty() && !force) {
    std::sort(odd.begin(), odd.end());
    if (odd.size() > 10) {
      const size_t more = odd.size() - 10;
      odd.resize(10);
      odd.push_back(absl::StrCat("and ", more, " more"));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        dir, " holds files sealed in the current format, and also files that are not (plain, or "
        "sealed by an older fedsilo): ", absl::StrJoin(odd, ", "),
        ". One of those may have been put there to be sealed as genuine; nothing was changed. "
        "Check them, then run again with --force to seal them too"));
  }

  const AeadFileSealer sealer(ring);
  ReencryptStats stats;
  for (const auto& [path, protection] : files) {
    FEDSILO_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
    const int plain_before = stats.plain;
    if (protection == Protection::kWhole) {
      FEDSILO_ASSIGN_OR_RETURN(std::optional<std::string> resealed,
                               Reseal(sealer, bytes, SealedName(path), path, seal_plain, stats));
      if (resealed.has_value()) FEDSILO_RETURN_IF_ERROR(WriteFileAtomically(path, *resealed));
      if (seal_plain && stats.plain > plain_before) stats.newly_sealed.push_back(path);
      continue;
    }
    // One record per line, each bound to its line number (as the writers
    // count them: every line, none empty, the last one ended).
    ReencryptStats lines;
    std::string rewritten;
    int64_t index = 0;
    if (!bytes.empty() && bytes.back() != '\n') {
      return absl::DataLossError(absl::StrCat(path, ": the last line is torn; start the program "
                                              "that writes it once to repair it, then retry"));
    }
    const std::vector<absl::string_view> all = absl::StrSplit(bytes, '\n');
    for (size_t i = 0; i + 1 < all.size(); ++i) {  // the piece after the last newline is empty
      const absl::string_view line = all[i];
      ++index;
      const std::string source = absl::StrCat(path, " line ", index);
      if (line.empty()) return absl::DataLossError(absl::StrCat(source, ": an empty line"));
      // The sealed bytes of the line, to re-seal, or the plain line.
      FEDSILO_ASSIGN_OR_RETURN(std::optional<std::string> sealed, SealedBytesOfLine(line, source));
      const std::string record = sealed.has_value() ? *std::move(sealed) : std::string(line);
      FEDSILO_ASSIGN_OR_RETURN(
          std::optional<std::string> resealed,
          Reseal(sealer, record, SealedLineName(path, index), source, seal_plain, lines));
      if (resealed.has_value()) {
        absl::StrAppend(&rewritten, LineOfSealedBytes(*resealed), "\n");
      } else {
        absl::StrAppend(&rewritten, line, "\n");
      }
    }
    // A file counts once: re-encrypted if any of its lines was.
    if (seal_plain && lines.plain > 0) stats.newly_sealed.push_back(path);
    if (lines.reencrypted > 0) {
      FEDSILO_RETURN_IF_ERROR(WriteFileAtomically(path, rewritten));
      ++stats.reencrypted;
    } else if (lines.plain > 0) {
      ++stats.plain;
    } else if (index > 0) {
      ++stats.current;
    }
  }
  return stats;
}

}  // namespace fedsilo::secure
