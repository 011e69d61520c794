package parquet

import (
	"github.com/apache/arrow/go/v15/parquet"
	"github.com/apache/arrow/go/v15/parquet/compress"

	"github.com/ccflow/ccflow/flow/flowarrow"
	"github.com/ccflow/ccflow/sink/table"
)

// The Parquet writer properties of the sink's files, and why.
//
// Arrow v15's zstd codec (compress.zstdCodec.EncodeLevel) builds a new
// klauspost zstd.Encoder for every page it compresses; the first use of that
// encoder allocates the match tables of GOMAXPROCS encoders, and a page of
// more than 128 KiB also allocates a 16 MiB history. On 2 cores that was
// 6.5 KB of garbage per flow, on 32 cores 70 KB. A pooled codec is not
// possible in v15: the codec table is unexported and compress.RegisterCodec
// only appeared in Arrow v16 (apache/arrow#40114); arrow-go v18 pools the
// encoders itself. So, within v15, the sink makes each zstd page cheaper and
// compresses fewer pages with zstd:
//
//   - zstd level 1 (klauspost SpeedFastest): the smallest tables. Its files
//     are 1.7% larger than level 3's with sinktest.Spread and 10% smaller
//     with sinktest.Flows (the pages are already dictionary-, bit- or
//     delta-packed), for 12% more rows per CPU-second;
//   - columns whose values come from configuration or a short list
//     (lowCardinality) are compressed with snappy, which allocates only its
//     output: their pages are a few bits per row, which zstd cannot shrink
//     enough to pay for an encoder per page;
//   - time_start and time_end are DELTA_BINARY_PACKED (flows arrive roughly
//     in time order, so the deltas are small) and snappy-compressed: zstd does
//     not shrink bit-packed deltas;
//   - bytes and sub_port are PLAIN: nearly every value is distinct, so a
//     dictionary only costs a page and, in Arrow v15, an allocation per value
//     (the dictionary encoder boxes every value it looks up).
//
// Every Parquet reader reads these encodings and mixed codecs (pyarrow,
// DuckDB, Spark, ClickHouse and chDB; the engine test reads the files with
// chDB and pyarrow).

// zstdLevel is the zstd level of the sink's files: 1, klauspost's
// SpeedFastest (see above).
const zstdLevel = 1

// lowCardinality are the flows columns that hold few distinct values in any
// traffic: set by the protocol, the configuration or the enrichment's short
// lists, or constant over a batch.
var lowCardinality = []string{
	flowarrow.ColExportProto, flowarrow.ColExporter, flowarrow.ColObsDomain,
	flowarrow.ColInIf, flowarrow.ColOutIf, flowarrow.ColKind, flowarrow.ColDirection,
	flowarrow.ColEpoch, flowarrow.ColProto, flowarrow.ColSamplingRate,
	flowarrow.ColRemoteCountry, flowarrow.ColRemoteProvider,
	flowarrow.ColExporterName, flowarrow.ColInIfName, flowarrow.ColOutIfName,
	flowarrow.ColBatchID,
}

// codecs maps Config.Compression to Arrow's codecs.
var codecs = map[string]compress.Compression{
	"zstd": compress.Codecs.Zstd, "snappy": compress.Codecs.Snappy,
	"gzip": compress.Codecs.Gzip, "none": compress.Codecs.Uncompressed,
}

// writerProperties returns the Parquet writer properties of a table's files
// for the configured codec.
func writerProperties(tbl string, cfg Config) *parquet.WriterProperties {
	codec := codecs[cfg.Compression]
	props := []parquet.WriterProperty{
		parquet.WithCompression(codec),
		parquet.WithDictionaryDefault(true),
		parquet.WithMaxRowGroupLength(int64(cfg.RowGroupRows)),
		parquet.WithCreatedBy("ccflow"),
	}
	if codec == compress.Codecs.Zstd {
		props = append(props, parquet.WithCompressionLevel(zstdLevel))
	}
	if tbl != table.Flows {
		return parquet.NewWriterProperties(props...)
	}
	for _, c := range []string{flowarrow.ColTimeStart, flowarrow.ColTimeEnd} {
		props = append(props,
			parquet.WithDictionaryFor(c, false),
			parquet.WithEncodingFor(c, parquet.Encodings.DeltaBinaryPacked))
	}
	for _, c := range []string{flowarrow.ColBytes, flowarrow.ColSubPort} {
		props = append(props, parquet.WithDictionaryFor(c, false))
	}
	if codec == compress.Codecs.Zstd {
		for _, c := range append([]string{flowarrow.ColTimeStart, flowarrow.ColTimeEnd}, lowCardinality...) {
			props = append(props, parquet.WithCompressionFor(c, compress.Codecs.Snappy))
		}
	}
	return parquet.NewWriterProperties(props...)
}
