#include "pcopy/protocol.hpp"

#include <cstring>
#include <utility>

namespace pcopy {
namespace {

constexpr size_t kHeader = 5;
constexpr uint32_t kMaxPayload = 1u << 30;  // a corrupt length must not make us allocate forever

class Writer {
 public:
  explicit Writer(std::string& out, MsgType type) : out_(out), start_(out.size()) {
    out_.append(4, '\0');
    out_.push_back(static_cast<char>(type));
  }
  ~Writer() {
    auto len = static_cast<uint32_t>(out_.size() - start_ - kHeader);
    for (int i = 0; i < 4; ++i) out_[start_ + i] = static_cast<char>(len >> (8 * i));
  }
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  template <typename T>
  void num(T value) {
    auto v = static_cast<uint64_t>(value);
    for (size_t i = 0; i < sizeof(T); ++i) out_.push_back(static_cast<char>(v >> (8 * i)));
  }
  void nanos(Nanos value) {
    num(static_cast<uint64_t>(value));
    num(static_cast<int64_t>(value >> 64));
  }
  void str(std::string_view s) {
    num(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }

 private:
  std::string& out_;
  size_t start_;
};

class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  template <typename T>
  T num() {
    need(sizeof(T));
    uint64_t v = 0;
    for (size_t i = 0; i < sizeof(T); ++i) v |= uint64_t(static_cast<unsigned char>(data_[i])) << (8 * i);
    data_.remove_prefix(sizeof(T));
    return static_cast<T>(v);
  }
  Nanos nanos() {
    auto low = num<uint64_t>();
    return Nanos(num<int64_t>()) * (Nanos(1) << 64) + low;
  }
  std::string str() {
    auto n = num<uint32_t>();
    need(n);
    std::string s(data_.substr(0, n));
    data_.remove_prefix(n);
    return s;
  }
  void finish() const {
    if (!data_.empty()) throw ProtocolError("trailing bytes in message");
  }

 private:
  void need(size_t n) const {
    if (data_.size() < n) throw ProtocolError("truncated message");
  }
  std::string_view data_;
};

// The bit of each DirFacts field in a batch's facts, both ways: no field's place rests on its
// order in the struct.
constexpr std::pair<bool DirFacts::*, uint16_t> kFactBits[] = {
    {&DirFacts::known, 1 << 0},        {&DirFacts::local, 1 << 1},       {&DirFacts::default_acl, 1 << 2},
    {&DirFacts::staged, 1 << 3},       {&DirFacts::never_shares, 1 << 4}, {&DirFacts::hides_names, 1 << 5},
    {&DirFacts::in_memory, 1 << 6},    {&DirFacts::locked, 1 << 7},      {&DirFacts::remote, 1 << 8},
};

// A job's flags: three of its bools, and which of its optional parts follow.
enum JobBit : uint8_t {
  kJobKnown = 1 << 0,
  kJobMeta = 1 << 1,
  kJobInodes = 1 << 2,  // src_dev, src_ino, dst_dev, dst_ino
  kJobWantHash = 1 << 3,
  kJobNamesInCopy = 1 << 4,
  kJobShared = 1 << 5,
};

}  // namespace

Nanos to_ns(const struct timespec& t) { return Nanos(t.tv_sec) * 1'000'000'000 + t.tv_nsec; }

struct timespec from_ns(Nanos ns) {
  Nanos sec = ns / 1'000'000'000, rest = ns % 1'000'000'000;
  if (rest < 0) --sec, rest += 1'000'000'000;  // times before 1970
  return {time_t(sec), long(rest)};
}

void Job::known_from(const struct stat& st, bool with_meta) {
  size = S_ISREG(st.st_mode) ? uint64_t(st.st_size) : 0;
  mtime_ns = to_ns(st.st_mtim);
  known = true;
  if (with_meta) meta = Meta{st.st_mode, st.st_uid, st.st_gid, to_ns(st.st_atim), to_ns(st.st_ctim)};
}

struct stat Job::known_stat() const {
  struct stat st {};
  st.st_size = off_t(size);
  st.st_mtim = from_ns(mtime_ns);
  if (meta) {
    st.st_mode = meta->mode;
    st.st_uid = meta->uid;
    st.st_gid = meta->gid;
    st.st_atim = from_ns(meta->atime_ns);
    st.st_ctim = from_ns(meta->ctime_ns);
  }
  return st;
}

void encode(std::string& out, const Batch& batch) {
  Writer w(out, MsgType::Batch);
  w.str(batch.dir);
  w.str(batch.dst_dir);
  uint16_t facts = 0;
  for (auto [field, bit] : kFactBits)
    if (batch.facts.*field) facts |= bit;
  w.num(facts);
  w.num(static_cast<uint32_t>(batch.jobs.size()));
  for (const Job& job : batch.jobs) {
    w.num(job.id);
    w.num(static_cast<uint8_t>(job.kind));
    w.num(job.attempt);
    w.str(job.name);
    w.str(job.dst_name);
    w.num(job.size);
    w.nanos(job.mtime_ns);
    w.num(uint8_t((job.known ? kJobKnown : 0) | (job.meta ? kJobMeta : 0) | (job.src_ino ? kJobInodes : 0) |
                  (job.want_hash ? kJobWantHash : 0) | (job.names_in_copy ? kJobNamesInCopy : 0) |
                  (job.shared ? kJobShared : 0)));
    if (job.meta) {
      w.num(job.meta->mode);
      w.num(job.meta->uid);
      w.num(job.meta->gid);
      w.nanos(job.meta->atime_ns);
      w.nanos(job.meta->ctime_ns);
    }
    w.str(job.link_target);
    w.str(job.temp);
    w.num(job.offset);
    w.num(job.length);
    if (job.src_ino) {
      w.num(job.src_dev);
      w.num(job.src_ino);
      w.num(job.dst_dev);
      w.num(job.dst_ino);
    }
    if (job.names_in_copy) w.num(job.names_in_copy);
  }
}

void encode(std::string& out, const Result& r) {
  Writer w(out, MsgType::Result);
  w.num(r.id);
  w.num(static_cast<uint8_t>(r.outcome));
  w.num(r.err);
  w.num(r.bytes);
  w.num(r.size);
  w.nanos(r.mtime_ns);
  w.str(r.detail);
  w.num(static_cast<uint8_t>(r.vanished));
  w.num(static_cast<uint8_t>(r.own_mount));
  w.str(r.temp);
  if (!r.temp.empty()) {
    w.num(r.src_dev);
    w.num(r.src_ino);
    w.num(r.dst_dev);
    w.num(r.dst_ino);
  }
  w.str(r.hash ? std::string_view(reinterpret_cast<const char*>(r.hash->data()), 16) : std::string_view());
  std::string deleted;  // NUL-separated: a path holds no NUL
  for (const std::string& path : r.deleted) deleted.append(path).push_back('\0');
  w.str(deleted);
  w.num(static_cast<uint32_t>(r.unkept.size()));
  for (const Unkept& u : r.unkept) {
    w.str(u.what);
    w.str(u.value);
    w.num(u.err);
  }
}

void encode(std::string& out, const Progress& p) {
  Writer w(out, MsgType::Progress);
  w.num(p.id);
  w.num(p.bytes);
}

Batch decode_batch(std::string_view payload) {
  Reader r(payload);
  Batch batch;
  batch.dir = r.str();
  batch.dst_dir = r.str();
  auto facts = r.num<uint16_t>();
  for (auto [field, bit] : kFactBits) batch.facts.*field = (facts & bit) != 0;
  auto n = r.num<uint32_t>();
  if (n > payload.size()) throw ProtocolError("impossible job count");
  batch.jobs.resize(n);
  for (Job& job : batch.jobs) {
    job.id = r.num<uint64_t>();
    job.kind = static_cast<JobKind>(r.num<uint8_t>());
    job.attempt = r.num<uint8_t>();
    job.name = r.str();
    job.dst_name = r.str();
    job.size = r.num<uint64_t>();
    job.mtime_ns = r.nanos();
    auto flags = r.num<uint8_t>();
    job.known = (flags & kJobKnown) != 0;
    job.want_hash = (flags & kJobWantHash) != 0;
    job.shared = (flags & kJobShared) != 0;
    if (flags & kJobMeta) {
      Job::Meta& m = job.meta.emplace();
      m.mode = r.num<uint32_t>();
      m.uid = r.num<uint32_t>();
      m.gid = r.num<uint32_t>();
      m.atime_ns = r.nanos();
      m.ctime_ns = r.nanos();
    }
    job.link_target = r.str();
    job.temp = r.str();
    job.offset = r.num<uint64_t>();
    job.length = r.num<uint64_t>();
    if (flags & kJobInodes) {
      job.src_dev = r.num<uint64_t>();
      job.src_ino = r.num<uint64_t>();
      job.dst_dev = r.num<uint64_t>();
      job.dst_ino = r.num<uint64_t>();
    }
    if (flags & kJobNamesInCopy) job.names_in_copy = r.num<uint32_t>();
  }
  r.finish();
  return batch;
}

Result decode_result(std::string_view payload) {
  Reader r(payload);
  Result res;
  res.id = r.num<uint64_t>();
  res.outcome = static_cast<Outcome>(r.num<uint8_t>());
  res.err = r.num<int32_t>();
  res.bytes = r.num<uint64_t>();
  res.size = r.num<uint64_t>();
  res.mtime_ns = r.nanos();
  res.detail = r.str();
  auto vanished = r.num<uint8_t>();
  if (vanished > uint8_t(Vanished::DirChanged)) throw ProtocolError("bad vanished value");
  res.vanished = static_cast<Vanished>(vanished);
  res.own_mount = r.num<uint8_t>() != 0;
  res.temp = r.str();
  if (!res.temp.empty()) {
    res.src_dev = r.num<uint64_t>();
    res.src_ino = r.num<uint64_t>();
    res.dst_dev = r.num<uint64_t>();
    res.dst_ino = r.num<uint64_t>();
  }
  std::string hash = r.str();
  if (hash.size() == 16) {
    res.hash.emplace();
    std::memcpy(res.hash->data(), hash.data(), 16);
  } else if (!hash.empty()) {
    throw ProtocolError("bad hash length");
  }
  std::string deleted = r.str();
  for (size_t pos = 0; pos < deleted.size();) {
    size_t end = deleted.find('\0', pos);
    if (end == std::string::npos) throw ProtocolError("unterminated deleted path");
    res.deleted.emplace_back(deleted, pos, end - pos);
    pos = end + 1;
  }
  auto unkept = r.num<uint32_t>();
  if (unkept > payload.size()) throw ProtocolError("impossible count of metadata not kept");
  for (uint32_t i = 0; i < unkept; ++i) {
    Unkept& u = res.unkept.emplace_back();
    u.what = r.str();
    u.value = r.str();
    u.err = r.num<int32_t>();
  }
  r.finish();
  return res;
}

Progress decode_progress(std::string_view payload) {
  Reader r(payload);
  Progress p;
  p.id = r.num<uint64_t>();
  p.bytes = r.num<uint64_t>();
  r.finish();
  return p;
}

std::optional<Frame> FrameReader::next() {
  size_t avail = buffer_.size() - consumed_;
  if (avail < kHeader) {
    if (consumed_ > 0 && avail == 0) buffer_.clear(), consumed_ = 0;
    return std::nullopt;
  }
  const char* h = buffer_.data() + consumed_;
  uint32_t len = 0;
  for (int i = 0; i < 4; ++i) len |= uint32_t(static_cast<unsigned char>(h[i])) << (8 * i);
  if (len > kMaxPayload) throw ProtocolError("frame too large");
  auto type = static_cast<MsgType>(h[4]);
  if (type != MsgType::Batch && type != MsgType::Result && type != MsgType::Progress)
    throw ProtocolError("unknown message type");
  if (avail < kHeader + len) return std::nullopt;
  Frame frame{type, buffer_.substr(consumed_ + kHeader, len)};
  consumed_ += kHeader + len;
  if (consumed_ == buffer_.size()) {
    buffer_.clear();
    consumed_ = 0;
  } else if (consumed_ > (1u << 20)) {
    buffer_.erase(0, consumed_);
    consumed_ = 0;
  }
  return frame;
}

}  // namespace pcopy
