// Package ccflow is the root of ccflow, a privacy-preserving flow-analysis
// pipeline that finds botnet command-and-control servers in an ISP's flow
// telemetry. The binary is cmd/ccflow; the stage packages (collector,
// privacy, enrich, bus, detect, sink) are an application's internals, not a
// public API. This package holds only repository-wide guard tests.
package ccflow
