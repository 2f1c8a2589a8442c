#include "secure/storage_keys.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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

bool IsSealable(const std::filesystem::path& p) {
  return p.extension() == ".fsm" || p.filename() == "privacy-ledger.json";
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
  const std::string temp = absl::StrCat(path, ".tmp.", ::getpid());
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return absl::InternalError(absl::StrCat(path, ": cannot write: ", std::strerror(errno)));
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                       ::fsync(fd) == 0;
  ::close(fd);
  if (!written || std::rename(temp.c_str(), path.c_str()) != 0) {
    ::unlink(temp.c_str());
    return absl::InternalError(absl::StrCat(path, ": cannot write: ", std::strerror(errno)));
  }
  return absl::OkStatus();
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

std::string AeadFileSealer::Seal(absl::string_view plaintext) const {
  InitCrypto();
  std::string header(kSealedMagic);
  header.push_back(static_cast<char>(kSealedFormatVersion));
  header.push_back(static_cast<char>(ring_.current.size()));
  header += ring_.current;
  std::string nonce(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, '\0');
  randombytes_buf(nonce.data(), nonce.size());
  header += nonce;
  std::string out = header;
  out.resize(header.size() + plaintext.size() + crypto_aead_xchacha20poly1305_ietf_ABYTES);
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(
      reinterpret_cast<unsigned char*>(out.data() + header.size()), &written,
      reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size(),
      reinterpret_cast<const unsigned char*>(header.data()), header.size(), nullptr,
      reinterpret_cast<const unsigned char*>(nonce.data()), ring_.keys.at(ring_.current).data());
  out.resize(header.size() + written);
  return out;
}

StatusOr<std::string> AeadFileSealer::KeyIdOf(absl::string_view sealed, absl::string_view source) {
  const size_t fixed = kSealedMagic.size() + 2;
  if (!IsSealed(sealed) || sealed.size() < fixed) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not an encrypted fedsilo file"));
  }
  const uint8_t version = static_cast<uint8_t>(sealed[kSealedMagic.size()]);
  if (version != kSealedFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": encrypted with format version ",
                                                   version, ", newer than this fedsilo reads (",
                                                   kSealedFormatVersion, ")"));
  }
  const size_t id_length = static_cast<uint8_t>(sealed[kSealedMagic.size() + 1]);
  if (sealed.size() < fixed + id_length + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES +
                          crypto_aead_xchacha20poly1305_ietf_ABYTES) {
    return absl::DataLossError(absl::StrCat(source, ": truncated encrypted file"));
  }
  return std::string(sealed.substr(fixed, id_length));
}

StatusOr<std::string> AeadFileSealer::Open(absl::string_view sealed,
                                           absl::string_view source) const {
  InitCrypto();
  FEDSILO_ASSIGN_OR_RETURN(std::string id, KeyIdOf(sealed, source));
  const auto key = ring_.keys.find(id);
  if (key == ring_.keys.end()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": encrypted with storage key '", id,
                                                      "', which this key ring does not hold"));
  }
  const size_t header =
      kSealedMagic.size() + 2 + id.size() + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
  const auto* bytes = reinterpret_cast<const unsigned char*>(sealed.data());
  std::string plain(sealed.size() - header, '\0');
  unsigned long long written = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          reinterpret_cast<unsigned char*>(plain.data()), &written, nullptr, bytes + header,
          sealed.size() - header, bytes, header,
          bytes + header - crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, key->second.data()) != 0) {
    sodium_memzero(plain.data(), plain.size());
    return absl::DataLossError(absl::StrCat(
        source, ": encrypted file fails authentication under key '", id,
        "': it was altered or truncated (or the key is not the one it was sealed with)"));
  }
  plain.resize(written);
  return plain;
}

StatusOr<ReencryptStats> ReencryptTree(const std::string& dir, const KeyRing& ring,
                                       bool seal_plain) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, ": no such folder"));
  }
  const AeadFileSealer sealer(ring);
  ReencryptStats stats;
  for (fs::recursive_directory_iterator it(dir, ec), end; it != end; it.increment(ec)) {
    if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
    if (!it->is_regular_file(ec)) continue;
    const std::string path = it->path().string();
    if (absl::StrContains(it->path().filename().string(), ".tmp")) continue;
    FEDSILO_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
    if (!IsSealed(bytes)) {
      if (!IsSealable(it->path())) continue;
      ++stats.plain;
      if (!seal_plain) continue;
      FEDSILO_RETURN_IF_ERROR(WriteFileAtomically(path, sealer.Seal(bytes)));
      ++stats.reencrypted;
      continue;
    }
    FEDSILO_ASSIGN_OR_RETURN(std::string id, AeadFileSealer::KeyIdOf(bytes, path));
    if (id == ring.current) {
      ++stats.current;
      continue;
    }
    FEDSILO_ASSIGN_OR_RETURN(std::string plain, sealer.Open(bytes, path));
    FEDSILO_RETURN_IF_ERROR(WriteFileAtomically(path, sealer.Seal(plain)));
    sodium_memzero(plain.data(), plain.size());
    ++stats.reencrypted;
  }
  return stats;
}

}  // namespace fedsilo::secure
