#include "pcopy/protocol.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace pcopy;

namespace {

std::string all_bytes_from(int first) {
  std::string s;
  for (int c = first; c <= 255; ++c) s.push_back(static_cast<char>(c));
  return s;
}

Batch sample_batch() {
  Batch b;
  b.dir = "photos/2024/raw";
  b.dst_dir = "photos/2024/.pcopy-12-d3.tmp";
  b.facts = DirFacts{true, false, true, true};
  Job a;
  a.id = 1;
  a.kind = JobKind::File;
  a.attempt = 0;
  a.name = "IMG_0001.CR2";
  a.size = 25'000'000;
  a.mtime_ns = 1'700'000'000'123'456'789;
  a.known = true;
  a.meta = Job::Meta{0104755, 4'000'000'000u, 65534, -1'000'000'001, to_ns({std::numeric_limits<time_t>::max() / 2, 7})};
  Job l;
  l.id = std::numeric_limits<uint64_t>::max();
  l.kind = JobKind::HardLink;
  l.attempt = 1;
  l.name = "hard";
  l.dst_name = "renamed";
  l.size = std::numeric_limits<uint64_t>::max();
  l.mtime_ns = to_ns({-11'644'473'600, 1});  // 1601, NTFS's zero time: past 64 bits of nanoseconds
  l.link_target = "photos/2024/raw/IMG_0001.CR2";
  Job lead;
  lead.id = 83;
  lead.name = "leads";
  lead.names_in_copy = std::numeric_limits<uint32_t>::max();
  Job s;
  s.id = 77;
  s.kind = JobKind::Symlink;
  s.name = "link";
  s.mtime_ns = -1;
  Job f;
  f.id = 78;
  f.kind = JobKind::Fifo;
  f.name = "fifo";
  Job d;
  d.id = 79;
  d.kind = JobKind::Device;
  d.name = "null";
  Job begin;
  begin.id = 80;
  begin.kind = JobKind::FileBegin;
  begin.name = "huge.img";
  begin.size = 5ull << 30;
  Job chunk;
  chunk.id = 81;
  chunk.kind = JobKind::FileChunk;
  chunk.name = "huge.img";
  chunk.temp = ".pcopy-123-4.tmp";
  chunk.offset = 1ull << 32;
  chunk.length = 64ull << 20;
  chunk.src_dev = 0xfd01;
  chunk.src_ino = std::numeric_limits<uint64_t>::max();
  chunk.dst_dev = 7;
  chunk.dst_ino = std::numeric_limits<uint64_t>::max() - 1;
  chunk.shared = true;
  Job end = chunk;
  end.id = 82;
  end.shared = false;
  end.kind = JobKind::FileEnd;
  end.offset = std::numeric_limits<uint64_t>::max();
  end.length = std::numeric_limits<uint64_t>::max() - 1;
  b.jobs = {a, l, s, f, d, begin, chunk, end, lead};
  return b;
}

void expect_job_eq(const Job& want, const Job& got) {
  EXPECT_EQ(want.id, got.id);
  EXPECT_EQ(want.kind, got.kind);
  EXPECT_EQ(want.attempt, got.attempt);
  EXPECT_EQ(want.name, got.name);
  EXPECT_EQ(want.dst_name, got.dst_name);
  EXPECT_EQ(want.size, got.size);
  EXPECT_EQ(want.mtime_ns, got.mtime_ns);
  EXPECT_EQ(want.known, got.known);
  ASSERT_EQ(want.meta.has_value(), got.meta.has_value());
  if (want.meta) {
    EXPECT_EQ(want.meta->mode, got.meta->mode);
    EXPECT_EQ(want.meta->uid, got.meta->uid);
    EXPECT_EQ(want.meta->gid, got.meta->gid);
    EXPECT_EQ(want.meta->atime_ns, got.meta->atime_ns);
    EXPECT_EQ(want.meta->ctime_ns, got.meta->ctime_ns);
  }
  EXPECT_EQ(want.link_target, got.link_target);
  EXPECT_EQ(want.temp, got.temp);
  EXPECT_EQ(want.offset, got.offset);
  EXPECT_EQ(want.length, got.length);
  EXPECT_EQ(want.shared, got.shared);
  EXPECT_EQ(want.src_dev, got.src_dev);
  EXPECT_EQ(want.src_ino, got.src_ino);
  EXPECT_EQ(want.dst_dev, got.dst_dev);
  EXPECT_EQ(want.dst_ino, got.dst_ino);
  EXPECT_EQ(want.names_in_copy, got.names_in_copy);
}

void expect_batch_eq(const Batch& want, const Batch& got) {
  EXPECT_EQ(want.dir, got.dir);
  EXPECT_EQ(want.facts.known, got.facts.known);
  EXPECT_EQ(want.facts.local, got.facts.local);
  EXPECT_EQ(want.facts.default_acl, got.facts.default_acl);
  EXPECT_EQ(want.facts.staged, got.facts.staged);
  EXPECT_EQ(want.facts.never_shares, got.facts.never_shares);
  EXPECT_EQ(want.facts.hides_names, got.facts.hides_names);
  EXPECT_EQ(want.facts.in_memory, got.facts.in_memory);
  EXPECT_EQ(want.facts.locked, got.facts.locked);
  EXPECT_EQ(want.facts.remote, got.facts.remote);
  EXPECT_EQ(want.dst_dir, got.dst_dir);
  ASSERT_EQ(want.jobs.size(), got.jobs.size());
  for (size_t i = 0; i < want.jobs.size(); ++i) {
    SCOPED_TRACE("job " + std::to_string(i));
    expect_job_eq(want.jobs[i], got.jobs[i]);
  }
}

void expect_result_eq(const Result& want, const Result& got) {
  EXPECT_EQ(want.id, got.id);
  EXPECT_EQ(want.outcome, got.outcome);
  EXPECT_EQ(want.err, got.err);
  EXPECT_EQ(want.bytes, got.bytes);
  EXPECT_EQ(want.size, got.size);
  EXPECT_EQ(want.mtime_ns, got.mtime_ns);
  EXPECT_EQ(want.detail, got.detail);
  EXPECT_EQ(want.vanished, got.vanished);
  EXPECT_EQ(want.own_mount, got.own_mount);
  EXPECT_EQ(want.temp, got.temp);
  EXPECT_EQ(want.src_dev, got.src_dev);
  EXPECT_EQ(want.src_ino, got.src_ino);
  EXPECT_EQ(want.dst_dev, got.dst_dev);
  EXPECT_EQ(want.dst_ino, got.dst_ino);
  EXPECT_EQ(want.hash, got.hash);
  EXPECT_EQ(want.deleted, got.deleted);
  EXPECT_EQ(want.unkept, got.unkept);
}

// Encodes one message, reads it back through a FrameReader, and checks the frame is exactly it.
template <typename Msg>
Frame one_frame(const Msg& msg, MsgType expected_type) {
  std::string wire;
  encode(wire, msg);
  FrameReader reader;
  reader.feed(wire.data(), wire.size());
  auto frame = reader.next();
  EXPECT_TRUE(frame.has_value());
  if (!frame) return Frame{expected_type, {}};
  EXPECT_EQ(frame->type, expected_type);
  EXPECT_EQ(frame->payload.size() + 5, wire.size());
  EXPECT_FALSE(reader.next().has_value());
  EXPECT_TRUE(reader.empty());
  return *frame;
}

Result sample_result() {
  Result r;
  r.id = 123456789012345ull;
  r.outcome = Outcome::Failed;
  r.err = 13;
  r.bytes = 1ull << 40;
  r.size = (1ull << 40) + 3;
  r.mtime_ns = -1'000'000'001;
  r.detail = "verification failed";
  r.vanished = Vanished::Dir;
  r.own_mount = true;
  r.temp = ".pcopy-77-1.tmp";
  r.src_dev = 2049;
  r.src_ino = 1ull << 40;
  r.dst_dev = 9;
  r.dst_ino = 1ull << 41;
  std::array<uint8_t, 16> h{};
  for (int i = 0; i < 16; ++i) h[i] = static_cast<uint8_t>(0xF0 + i);
  r.hash = h;
  r.deleted = {"dir/was a dir/inner", std::string("bad\xff\n", 5), "", "dir/was a dir"};
  r.unkept = {{"owner", "1000:1000", 22}, {"extended attributes", std::string("user.a\0b, system.posix_acl_access", 34), 95}};
  return r;
}

// The messages a worker and the parent exchange, as one byte stream of several frames.
struct Stream {
  std::string wire;
  std::vector<Batch> batches;
  std::vector<Result> results;
  std::vector<Progress> progress;
  std::vector<MsgType> order;
};

Stream sample_stream() {
  Stream s;
  for (int i = 0; i < 20; ++i) {
    if (i % 3 == 0) {
      Batch b = sample_batch();
      b.dir += std::to_string(i);
      b.jobs[0].name += all_bytes_from(1);
      if (i == 9) b.jobs.clear();  // an empty batch is still a frame
      encode(s.wire, b);
      s.batches.push_back(b);
      s.order.push_back(MsgType::Batch);
    } else if (i % 3 == 1) {
      Result r = sample_result();
      r.id = uint64_t(i);
      if (i % 2) r.hash.reset();
      encode(s.wire, r);
      s.results.push_back(r);
      s.order.push_back(MsgType::Result);
    } else {
      Progress p{uint64_t(i), uint64_t(i) * 8 * 1024 * 1024};
      encode(s.wire, p);
      s.progress.push_back(p);
      s.order.push_back(MsgType::Progress);
    }
  }
  return s;
}

// Decodes every frame of `frames` and checks them against the stream's messages, in order.
void expect_stream(const Stream& s, const std::vector<Frame>& frames) {
  ASSERT_EQ(frames.size(), s.order.size());
  size_t b = 0, r = 0, p = 0;
  for (size_t i = 0; i < frames.size(); ++i) {
    SCOPED_TRACE("frame " + std::to_string(i));
    ASSERT_EQ(frames[i].type, s.order[i]);
    switch (frames[i].type) {
      case MsgType::Batch: expect_batch_eq(s.batches[b++], decode_batch(frames[i].payload)); break;
      case MsgType::Result: expect_result_eq(s.results[r++], decode_result(frames[i].payload)); break;
      case MsgType::Progress: {
        Progress got = decode_progress(frames[i].payload);
        EXPECT_EQ(got.id, s.progress[p].id);
        EXPECT_EQ(got.bytes, s.progress[p].bytes);
        ++p;
        break;
      }
    }
  }
}

std::string header(uint32_t len, uint8_t type) {
  std::string h;
  for (int i = 0; i < 4; ++i) h.push_back(static_cast<char>(len >> (8 * i)));
  h.push_back(static_cast<char>(type));
  return h;
}

}  // namespace

// The kernel's times from 1601 (NTFS's zero) to far past 2262 come back as they were.
TEST(Protocol, TimesPastSixtyFourBitNanosecondsComeBackAsTheyWere) {
  for (timespec t : {timespec{-11'644'473'600, 0}, timespec{-11'644'473'600, 999'999'999}, timespec{-1, 1},
                     timespec{0, 0}, timespec{16'000'000'000, 500'000'000}, timespec{1L << 40, 3}}) {
    timespec back = from_ns(to_ns(t));
    EXPECT_EQ(back.tv_sec, t.tv_sec);
    EXPECT_EQ(back.tv_nsec, t.tv_nsec);
  }
}

TEST(Protocol, BatchSurvivesEncodeFrameAndDecode) {
  Batch b = sample_batch();
  Frame f = one_frame(b, MsgType::Batch);
  expect_batch_eq(b, decode_batch(f.payload));
}

TEST(Protocol, EveryCombinationOfDirectoryFactsSurvivesTheRoundTrip) {
  for (int bits = 0; bits < 512; ++bits) {
    Batch b = sample_batch();
    b.facts = DirFacts{(bits & 1) != 0,  (bits & 2) != 0,  (bits & 4) != 0,   (bits & 8) != 0,
                       (bits & 16) != 0, (bits & 32) != 0, (bits & 64) != 0,  (bits & 128) != 0,
                       (bits & 256) != 0};
    SCOPED_TRACE(bits);
    expect_batch_eq(b, decode_batch(one_frame(b, MsgType::Batch).payload));
  }
}

TEST(Protocol, EmptyBatchOfTheRootSurvivesTheRoundTrip) {
  Batch b;  // dir "" is the root
  Frame f = one_frame(b, MsgType::Batch);
  Batch got = decode_batch(f.payload);
  EXPECT_EQ(got.dir, "");
  EXPECT_TRUE(got.jobs.empty());
}

TEST(Protocol, ResultWithHashSurvivesTheRoundTrip) {
  Result r = sample_result();
  Frame f = one_frame(r, MsgType::Result);
  expect_result_eq(r, decode_result(f.payload));
}

TEST(Protocol, ResultWithoutHashComesBackWithoutHash) {
  Result r;
  r.id = 5;
  r.outcome = Outcome::Skipped;
  Frame f = one_frame(r, MsgType::Result);
  Result got = decode_result(f.payload);
  expect_result_eq(r, got);
  EXPECT_FALSE(got.hash.has_value());
}

TEST(Protocol, EveryOutcomeSurvivesTheRoundTrip) {
  for (Outcome o : {Outcome::Copied, Outcome::Replaced, Outcome::Skipped, Outcome::Failed}) {
    Result r;
    r.id = 9;
    r.outcome = o;
    r.err = std::numeric_limits<int32_t>::min();
    Frame f = one_frame(r, MsgType::Result);
    expect_result_eq(r, decode_result(f.payload));
  }
}

TEST(Protocol, ProgressSurvivesTheRoundTrip) {
  Progress p{std::numeric_limits<uint64_t>::max(), 0x0102030405060708ull};
  Frame f = one_frame(p, MsgType::Progress);
  Progress got = decode_progress(f.payload);
  EXPECT_EQ(got.id, p.id);
  EXPECT_EQ(got.bytes, p.bytes);
}

TEST(Protocol, FrameHeaderIsLittleEndianLengthThenType) {
  std::string wire;
  encode(wire, Progress{1, 2});
  ASSERT_EQ(wire.size(), 5u + 16u);
  EXPECT_EQ(wire.substr(0, 5), header(16, 3));
}

TEST(Protocol, PathsOf8KiBTravelUnchanged) {
  Batch b;
  b.dir = std::string(8192, 'd');
  for (int i = 0; i < 3; ++i) {
    Job j;
    j.id = uint64_t(i);
    j.name = std::string(8192, char('a' + i));
    j.dst_name = std::string(8192, 'x');
    j.link_target = std::string(8192, '/');
    b.jobs.push_back(j);
  }
  Frame f = one_frame(b, MsgType::Batch);
  expect_batch_eq(b, decode_batch(f.payload));
}

TEST(Protocol, NamesWithEveryByteValueFrom1To255TravelUnchanged) {
  Batch b;
  b.dir = all_bytes_from(1);
  Job j;
  j.name = all_bytes_from(1);
  ASSERT_EQ(j.name.size(), 255u);
  b.jobs.push_back(j);
  Frame f = one_frame(b, MsgType::Batch);
  Batch got = decode_batch(f.payload);
  expect_batch_eq(b, got);
  EXPECT_EQ(got.jobs[0].name, all_bytes_from(1));
}

TEST(Protocol, StringFieldsCarryEveryByteValueIncludingNul) {
  const std::string blob = all_bytes_from(0) + all_bytes_from(0);
  ASSERT_EQ(blob.size(), 512u);
  ASSERT_EQ(blob[0], '\0');
  Batch b;
  b.dir = blob;
  Job j;
  j.name = all_bytes_from(1);
  j.dst_name = blob;
  j.link_target = blob;
  j.temp = blob;
  b.jobs.push_back(j);
  expect_batch_eq(b, decode_batch(one_frame(b, MsgType::Batch).payload));

  Result r;
  r.detail = blob;
  r.temp = blob;
  Result got = decode_result(one_frame(r, MsgType::Result).payload);
  EXPECT_EQ(got.detail, blob);
  EXPECT_EQ(got.temp, blob);
}

TEST(Protocol, StreamFedOneByteAtATimeIsReassembledExactly) {
  Stream s = sample_stream();
  FrameReader reader;
  std::vector<Frame> frames;
  for (char c : s.wire) {
    reader.feed(&c, 1);
    while (auto f = reader.next()) frames.push_back(std::move(*f));
  }
  EXPECT_TRUE(reader.empty());
  expect_stream(s, frames);
}

TEST(Protocol, StreamFedInRandomSizePiecesIsReassembledExactly) {
  Stream s = sample_stream();
  std::mt19937 rng(12345);
  for (int round = 0; round < 50; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    FrameReader reader;
    std::vector<Frame> frames;
    size_t pos = 0;
    while (pos < s.wire.size()) {
      size_t n = std::min<size_t>(s.wire.size() - pos, 1 + rng() % 700);
      reader.feed(s.wire.data() + pos, n);
      pos += n;
      // Sometimes read only one frame per feed, so whole frames pile up in the buffer.
      if (rng() % 2) {
        if (auto f = reader.next()) frames.push_back(std::move(*f));
      } else {
        while (auto f = reader.next()) frames.push_back(std::move(*f));
      }
    }
    while (auto f = reader.next()) frames.push_back(std::move(*f));
    EXPECT_TRUE(reader.empty());
    expect_stream(s, frames);
  }
}

TEST(Protocol, LongStreamPastTheCompactionThresholdIsReassembledExactly) {
  // More than 1 MiB goes through one reader, consumed while partly buffered.
  std::string wire;
  std::vector<Progress> sent;
  for (uint64_t i = 0; i < 100000; ++i) {
    Progress p{i, i * 3};
    encode(wire, p);
    sent.push_back(p);
  }
  ASSERT_GT(wire.size(), 2u << 20);
  FrameReader reader;
  std::vector<Progress> got;
  size_t pos = 0;
  std::mt19937 rng(7);
  while (pos < wire.size()) {
    size_t n = std::min<size_t>(wire.size() - pos, 1 + rng() % 100000);
    reader.feed(wire.data() + pos, n);
    pos += n;
    for (int k = 0; k < 3000; ++k) {
      auto f = reader.next();
      if (!f) break;
      ASSERT_EQ(f->type, MsgType::Progress);
      got.push_back(decode_progress(f->payload));
    }
  }
  while (auto f = reader.next()) got.push_back(decode_progress(f->payload));
  ASSERT_EQ(got.size(), sent.size());
  for (size_t i = 0; i < sent.size(); ++i) {
    ASSERT_EQ(got[i].id, sent[i].id);
    ASSERT_EQ(got[i].bytes, sent[i].bytes);
  }
}

TEST(Protocol, IncompleteFrameIsHeldBackUntilTheRestArrives) {
  std::string wire;
  encode(wire, sample_batch());
  FrameReader reader;
  reader.feed(wire.data(), 4);  // not even a whole header
  EXPECT_FALSE(reader.next().has_value());
  reader.feed(wire.data() + 4, wire.size() - 5);  // all but the last byte
  EXPECT_FALSE(reader.next().has_value());
  EXPECT_FALSE(reader.empty());
  reader.feed(wire.data() + wire.size() - 1, 1);
  auto f = reader.next();
  ASSERT_TRUE(f.has_value());
  expect_batch_eq(sample_batch(), decode_batch(f->payload));
  EXPECT_TRUE(reader.empty());
}

TEST(Protocol, FrameOf10MBIsReassembledAndDecoded) {
  Batch b;
  b.dir = "big";
  Job j;
  j.id = 42;
  j.name = "n";
  j.link_target = std::string(10'000'000, '\0');
  for (size_t i = 0; i < j.link_target.size(); i += 997) j.link_target[i] = static_cast<char>(i % 251 + 1);
  b.jobs.push_back(j);
  std::string wire;
  encode(wire, b);
  ASSERT_GT(wire.size(), 10'000'000u);
  FrameReader reader;
  std::optional<Frame> f;
  for (size_t pos = 0; pos < wire.size(); pos += 65536) {
    EXPECT_FALSE(f.has_value());
    reader.feed(wire.data() + pos, std::min<size_t>(65536, wire.size() - pos));
    if (!f) f = reader.next();
  }
  ASSERT_TRUE(f.has_value());
  Batch got = decode_batch(f->payload);
  ASSERT_EQ(got.jobs.size(), 1u);
  EXPECT_EQ(got.jobs[0].id, 42u);
  EXPECT_TRUE(got.jobs[0].link_target == j.link_target);
  EXPECT_TRUE(reader.empty());
}

TEST(Protocol, TruncatedBatchPayloadThrowsProtocolError) {
  std::string wire;
  encode(wire, sample_batch());
  std::string payload = wire.substr(5);
  for (size_t cut = 0; cut < payload.size(); ++cut) {
    SCOPED_TRACE("cut at " + std::to_string(cut));
    EXPECT_THROW(decode_batch(std::string_view(payload).substr(0, cut)), ProtocolError);
  }
}

TEST(Protocol, TruncatedResultAndProgressPayloadsThrowProtocolError) {
  std::string wire;
  encode(wire, sample_result());
  std::string payload = wire.substr(5);
  for (size_t cut = 0; cut < payload.size(); ++cut)
    EXPECT_THROW(decode_result(std::string_view(payload).substr(0, cut)), ProtocolError) << "cut " << cut;
  wire.clear();
  encode(wire, Progress{1, 2});
  payload = wire.substr(5);
  for (size_t cut = 0; cut < payload.size(); ++cut)
    EXPECT_THROW(decode_progress(std::string_view(payload).substr(0, cut)), ProtocolError) << "cut " << cut;
}

TEST(Protocol, TrailingBytesAfterAMessageThrowProtocolError) {
  std::string wire;
  encode(wire, Progress{1, 2});
  EXPECT_THROW(decode_progress(wire.substr(5) + "x"), ProtocolError);
  wire.clear();
  encode(wire, sample_batch());
  EXPECT_THROW(decode_batch(wire.substr(5) + "x"), ProtocolError);
  wire.clear();
  encode(wire, sample_result());
  EXPECT_THROW(decode_result(wire.substr(5) + "x"), ProtocolError);
}

TEST(Protocol, StringLengthPastTheEndOfThePayloadThrowsProtocolError) {
  // dir length claims 1000 bytes, 3 follow.
  std::string payload = header(1000, 0).substr(0, 4) + "abc";
  EXPECT_THROW(decode_batch(payload), ProtocolError);
  // dir length 0xFFFFFFFF: must not be trusted.
  payload = std::string(4, '\xff');
  EXPECT_THROW(decode_batch(payload), ProtocolError);
}

TEST(Protocol, ImpossibleJobCountThrowsInsteadOfAllocating) {
  std::string payload(4, '\0');      // dir ""
  payload += std::string(4, '\xff');  // 4 billion jobs in 8 bytes
  EXPECT_THROW(decode_batch(payload), ProtocolError);
}

TEST(Protocol, ResultWithAnUnterminatedDeletedPathThrowsProtocolError) {
  Result r = sample_result();
  r.deleted.clear();
  r.unkept.clear();
  // The last fields are the deleted paths and the count of unkept metadata, both empty here: make
  // the paths one byte without its NUL.
  Frame f = one_frame(r, MsgType::Result);
  std::string payload(f.payload);
  ASSERT_EQ(payload.substr(payload.size() - 8), std::string(8, '\0'));
  payload.resize(payload.size() - 8);
  payload += header(1, 0).substr(0, 4) + "x" + std::string(4, '\0');
  EXPECT_THROW(decode_result(payload), ProtocolError);
}

TEST(Protocol, ResultWithAnImpossibleCountOfUnkeptMetadataThrowsInsteadOfAllocating) {
  Result r = sample_result();
  r.unkept.clear();
  Frame f = one_frame(r, MsgType::Result);
  std::string payload(f.payload);
  payload.replace(payload.size() - 4, 4, std::string(4, '\xff'));  // 4 billion entries in 4 bytes
  EXPECT_THROW(decode_result(payload), ProtocolError);
  payload.replace(payload.size() - 4, 4, header(1, 0).substr(0, 4));  // one, then nothing
  EXPECT_THROW(decode_result(payload), ProtocolError);
}

// The payload of a Result with nothing set but its detail, "x".
static std::string minimal_result_payload() {
  std::string wire;
  Result r;
  r.detail = "x";
  encode(wire, r);
  return wire.substr(5);
}

TEST(Protocol, ResultHashOfWrongLengthThrowsProtocolError) {
  std::string payload = minimal_result_payload();
  // The hash string is followed by the deleted paths and the unkept count, all empty now: claim 3
  // bytes of hash and append them.
  ASSERT_EQ(payload.substr(payload.size() - 12), std::string(12, '\0'));
  payload.resize(payload.size() - 12);
  payload += header(3, 0).substr(0, 4) + "abc" + std::string(8, '\0');
  EXPECT_THROW(decode_result(payload), ProtocolError);
}

TEST(Protocol, ResultVanishedOutOfRangeThrowsProtocolError) {
  std::string payload = minimal_result_payload();
  size_t at = payload.find('x') + 1;  // the byte after the detail
  ASSERT_EQ(payload[at], '\0');
  payload[at] = 4;
  EXPECT_THROW(decode_result(payload), ProtocolError);
  payload[at] = 3;
  EXPECT_EQ(decode_result(payload).vanished, Vanished::DirChanged);
}

TEST(Protocol, MalformedFrameLengthThrowsProtocolError) {
  FrameReader reader;
  std::string h = header(0xFFFFFFFFu, 1);
  reader.feed(h.data(), h.size());
  EXPECT_THROW(reader.next(), ProtocolError);

  FrameReader reader2;
  h = header((1u << 30) + 1, 2);
  reader2.feed(h.data(), h.size());
  EXPECT_THROW(reader2.next(), ProtocolError);
}

// What the parent stat()ed comes back out of the job as the worker's view of the source.
TEST(Protocol, KnownStatRoundTripsThroughAJob) {
  struct stat st {};
  st.st_mode = S_IFREG | 02640;
  st.st_uid = 1234;
  st.st_gid = 5678;
  st.st_size = 4096;
  st.st_atim = {-2, 999'999'999};  // before 1970
  st.st_mtim = {1'700'000'000, 1};
  st.st_ctim = {1'700'000'001, 0};
  Job job;
  job.known_from(st, true);
  struct stat back = job.known_stat();
  EXPECT_EQ(back.st_mode, st.st_mode);
  EXPECT_EQ(back.st_uid, st.st_uid);
  EXPECT_EQ(back.st_gid, st.st_gid);
  EXPECT_EQ(back.st_size, st.st_size);
  for (auto [a, b] : {std::pair{back.st_atim, st.st_atim}, {back.st_mtim, st.st_mtim}, {back.st_ctim, st.st_ctim}}) {
    EXPECT_EQ(a.tv_sec, b.tv_sec);
    EXPECT_EQ(a.tv_nsec, b.tv_nsec);
  }
  Job bare;
  bare.known_from(st, false);
  EXPECT_TRUE(bare.known);
  EXPECT_FALSE(bare.meta.has_value());
}

TEST(Protocol, UnknownMessageTypeThrowsProtocolError) {
  for (uint8_t type : {uint8_t(0), uint8_t(4), uint8_t(255)}) {
    FrameReader reader;
    std::string h = header(0, type);
    reader.feed(h.data(), h.size());
    EXPECT_THROW(reader.next(), ProtocolError) << "type " << int(type);
  }
}

TEST(Protocol, ValidFrameAfterAnotherIsNotConfusedWithIt) {
  // Two frames glued together with no gap: the second is found at exactly the right offset.
  std::string wire;
  encode(wire, Progress{1, 10});
  encode(wire, Progress{2, 20});
  FrameReader reader;
  reader.feed(wire.data(), wire.size());
  auto a = reader.next();
  auto b = reader.next();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(decode_progress(a->payload).id, 1u);
  EXPECT_EQ(decode_progress(b->payload).bytes, 20u);
  EXPECT_FALSE(reader.next().has_value());
}
