// Package netflow decodes NetFlow v9 (RFC 3954) and IPFIX (RFC 7011)
// datagrams with templates compiled into decoding programs.
//
// A Session holds the state of one exporter: its templates and options
// templates per (version, observation domain, template ID), the sampling and
// boot-time facts its options data announced per domain, and a bounded
// buffer of data sets that arrived before their template. Templates are
// compiled when they arrive (or change) into a list of (field, offset,
// length) steps, so decoding a data record is a loop over the fields ccflow
// uses, with no per-record allocation. Sessions are not safe for concurrent
// use; the collector holds one per exporter behind a mutex.
//
// The decoder is ccflow's own; a differential test proves it equal to
// goflow2 v2.2.6's decoder on every datagram of the test corpus and on the
// fuzz corpus. It never panics, and every length it reads is checked against
// the datagram.
package netflow

import (
	"encoding/binary"
	"time"
)

// Error is a decoding error. Its string form (without the package prefix)
// is the `reason` label of the collector's decode-error metric.
type Error string

// Decoding errors. Decode reports the first problem of a datagram and
// decodes every set it can.
const (
	// ErrShort: the datagram, a set header or a set is truncated.
	ErrShort Error = "truncated"
	// ErrVersion: the version is neither 9 nor 10.
	ErrVersion Error = "bad_version"
	// ErrLength: the IPFIX header length disagrees with the datagram.
	ErrLength Error = "bad_length"
	// ErrSet: a set is shorter than its header or has a reserved ID.
	ErrSet Error = "bad_set"
	// ErrTemplate: a template record is truncated, has an ID below 256,
	// more fields than allowed, or describes records longer than a set.
	ErrTemplate Error = "bad_template"
	// ErrZeroTemplate: a template describes zero-length records.
	ErrZeroTemplate Error = "zero_length_template"
	// ErrTemplateLimit: the exporter has as many templates as allowed.
	ErrTemplateLimit Error = "template_limit"
	// ErrRecord: a record's variable-length fields run past its set.
	ErrRecord Error = "bad_record"
)

// Error implements error.
func (e Error) Error() string { return "netflow: " + string(e) }

// Reason returns the metric label of e.
func (e Error) Reason() string { return string(e) }

// Limits bound the memory a Session may use.
type Limits struct {
	// MaxTemplates is the number of templates and options templates the
	// session keeps (over all domains). A new template beyond it is refused
	// with ErrTemplateLimit; refreshes of known templates are accepted.
	MaxTemplates int
	// MaxFields is the largest field count of a template.
	MaxFields int
	// TemplateExpiry removes a template that was not refreshed for this
	// long; 0 keeps templates until they change or are withdrawn.
	TemplateExpiry time.Duration
	// PendingBytes is the buffer for data sets that arrive before their
	// template; 0 turns buffering off.
	PendingBytes int
	// PendingSets is the most data sets the buffer holds.
	PendingSets int
	// PendingAge drops buffered data sets older than this.
	PendingAge time.Duration
	// MaxSamplers is the most sampler or selector IDs remembered per
	// domain from options data.
	MaxSamplers int
}

// DefaultLimits returns limits suited to a carrier router.
func DefaultLimits() Limits {
	return Limits{
		MaxTemplates:   256,
		MaxFields:      256,
		TemplateExpiry: 30 * time.Minute,
		PendingBytes:   64 << 10,
		PendingSets:    256,
		PendingAge:     time.Minute,
		MaxSamplers:    64,
	}
}

// Stats are a session's counters since it was created.
type Stats struct {
	// Templates is the number of templates held now.
	Templates int
	// Misses counts data sets whose template was unknown on arrival.
	Misses uint64
	// Released counts buffered data sets decoded once their template came.
	Released uint64
	// Dropped counts data sets dropped without a template (buffering off,
	// buffer full, or too old).
	Dropped uint64
	// Expired counts templates removed by TemplateExpiry.
	Expired uint64
	// Withdrawn counts IPFIX template withdrawals.
	Withdrawn uint64
}

// sampler is a sampler or selector ID announced in options data.
type sampler struct {
	id       uint64
	selector bool
	rate     uint32
}

// domain holds what options data announced for one observation domain.
type domain struct {
	templates    int
	systemInitMs uint64
	rate         uint32
	samplers     []sampler
}

// Session decodes the datagrams of one exporter. The zero value is not
// usable; call NewSession.
type Session struct {
	lim       Limits
	templates map[tkey]*template
	domains   map[dkey]*domain
	pending   pending
	stats     Stats
	scratch   []tfield
	opt       Record
	changed   bool
	err       error
}

// NewSession returns an empty session with the given limits.
func NewSession(lim Limits) *Session {
	return &Session{lim: lim, templates: map[tkey]*template{}, domains: map[dkey]*domain{}}
}

// Stats returns the session's counters.
func (s *Session) Stats() Stats {
	st := s.stats
	st.Templates = len(s.templates)
	return st
}

func (s *Session) note(err error) {
	if s.err == nil && err != nil {
		s.err = err
	}
}

// Decode decodes one NetFlow v9 or IPFIX datagram b, received at nowMs
// (Unix ms), and appends its data records to out, followed by the records of
// buffered data sets whose template b brought. Options data updates the
// session and produces no records. Decode keeps no reference to b.
func (s *Session) Decode(b []byte, nowMs int64, out []Record) ([]Record, error) {
	s.err, s.changed = nil, false
	if len(b) < 2 {
		return out, ErrShort
	}
	ctx := Record{Version: binary.BigEndian.Uint16(b), ReceivedMs: nowMs}
	var limit int // bytes of sets to read
	switch ctx.Version {
	case 9:
		if len(b) < 20 {
			return out, ErrShort
		}
		ctx.SysUptime = binary.BigEndian.Uint32(b[4:])
		ctx.ExportSec = binary.BigEndian.Uint32(b[8:])
		ctx.Domain = binary.BigEndian.Uint32(b[16:])
		b = b[20:]
		limit = len(b)
	case 10:
		if len(b) < 16 {
			return out, ErrShort
		}
		msgLen := int(binary.BigEndian.Uint16(b[2:]))
		ctx.ExportSec = binary.BigEndian.Uint32(b[4:])
		ctx.Domain = binary.BigEndian.Uint32(b[12:])
		b = b[16:]
		limit = len(b)
		if msgLen != len(b)+16 {
			s.note(ErrLength)
			// Like goflow2: sets are read while fewer than Length-16
			// bytes were consumed, each as long as its own header says.
			if msgLen >= 16 {
				limit = msgLen - 16
			}
		}
	default:
		return out, ErrVersion
	}
	consumed := 0
	for len(b) > 0 && consumed < limit {
		if len(b) < 4 {
			s.note(ErrShort)
			break
		}
		id, l := binary.BigEndian.Uint16(b), int(binary.BigEndian.Uint16(b[2:]))
		if l < 4 {
			s.note(ErrSet)
			break
		}
		if l > len(b) {
			s.note(ErrShort)
			l = len(b)
		}
		body := b[4:l]
		switch {
		case (ctx.Version == 9 && id == 0) || (ctx.Version == 10 && id == 2):
			s.templateSet(&ctx, body, nowMs)
		case (ctx.Version == 9 && id == 1) || (ctx.Version == 10 && id == 3):
			s.optionsTemplateSet(&ctx, body, nowMs)
		case id >= 256:
			out = s.dataSet(&ctx, id, body, nowMs, out)
		default:
			s.note(ErrSet)
		}
		b = b[l:]
		consumed += l
	}
	if s.changed && len(s.pending.sets) > 0 {
		out = s.release(nowMs, out)
	}
	return out, s.err
}

// templateSet installs the templates of a template set.
func (s *Session) templateSet(ctx *Record, body []byte, nowMs int64) {
	for len(body) >= 4 {
		id, count := binary.BigEndian.Uint16(body), int(binary.BigEndian.Uint16(body[2:]))
		body = body[4:]
		if ctx.Version == 10 && count == 0 {
			s.withdraw(ctx, id, false)
			continue
		}
		if count > s.lim.MaxFields {
			// Refused before its fields are read, which bounds the
			// scratch space; the rest of the set is skipped.
			s.note(ErrTemplate)
			return
		}
		var ok bool
		if body, ok = s.readFields(ctx.Version, body, count); !ok {
			s.note(ErrTemplate)
			return
		}
		s.note(s.addTemplate(ctx, id, s.scratch, 0, false, nowMs))
	}
}

// optionsTemplateSet installs the options templates of an options
// template set.
func (s *Session) optionsTemplateSet(ctx *Record, body []byte, nowMs int64) {
	for len(body) >= 4 {
		id := binary.BigEndian.Uint16(body)
		var nScope, count int
		if ctx.Version == 9 {
			if len(body) < 6 {
				s.note(ErrTemplate)
				return
			}
			nScope = int(binary.BigEndian.Uint16(body[2:])) / 4
			count = nScope + int(binary.BigEndian.Uint16(body[4:]))/4
			body = body[6:]
		} else {
			count = int(binary.BigEndian.Uint16(body[2:]))
			if count == 0 {
				s.withdraw(ctx, id, true)
				body = body[4:]
				continue
			}
			if len(body) < 6 {
				s.note(ErrTemplate)
				return
			}
			nScope = int(binary.BigEndian.Uint16(body[4:]))
			body = body[6:]
			if nScope > count {
				s.note(ErrTemplate)
				return
			}
		}
		if count > s.lim.MaxFields {
			s.note(ErrTemplate)
			return
		}
		var ok bool
		if body, ok = s.readFields(ctx.Version, body, count); !ok {
			s.note(ErrTemplate)
			return
		}
		s.note(s.addTemplate(ctx, id, s.scratch, nScope, true, nowMs))
	}
}

// readFields reads count field specifiers into s.scratch.
func (s *Session) readFields(version uint16, body []byte, count int) ([]byte, bool) {
	fs := s.scratch[:0]
	for range count {
		if len(body) < 4 {
			return body, false
		}
		f := tfield{typ: binary.BigEndian.Uint16(body), length: binary.BigEndian.Uint16(body[2:])}
		body = body[4:]
		if version == 10 && f.typ&0x8000 != 0 {
			if len(body) < 4 {
				return body, false
			}
			f.typ &^= 0x8000
			f.enterprise = true
			f.pen = binary.BigEndian.Uint32(body)
			body = body[4:]
		}
		fs = append(fs, f)
	}
	s.scratch = fs
	return body, true
}

// addTemplate installs, refreshes or replaces a template.
func (s *Session) addTemplate(ctx *Record, id uint16, fields []tfield, nScope int, options bool, nowMs int64) error {
	key := tkey{version: ctx.Version, id: id, domain: ctx.Domain}
	old := s.templates[key]
	if old != nil && old.same(fields, nScope, options) {
		old.seen = nowMs
		return nil
	}
	var err error
	var t *template
	switch {
	case id < 256:
		err = ErrTemplate
	default:
		t, err = compile(key, fields, nScope, options)
	}
	if err != nil {
		if old != nil {
			s.remove(key)
		}
		return err
	}
	if old == nil && len(s.templates) >= s.lim.MaxTemplates {
		s.expire(nowMs)
		if len(s.templates) >= s.lim.MaxTemplates {
			return ErrTemplateLimit
		}
	}
	t.seen = nowMs
	if old == nil {
		s.domain(key.version, key.domain, true).templates++
	}
	s.templates[key] = t
	s.changed = true
	return nil
}

// remove deletes a template.
func (s *Session) remove(key tkey) {
	if _, ok := s.templates[key]; !ok {
		return
	}
	delete(s.templates, key)
	dk := dkey{key.version, key.domain}
	if d := s.domains[dk]; d != nil {
		d.templates--
	}
}

// withdraw handles an IPFIX template withdrawal (RFC 7011 section 8.1):
// template ID 2 (3 for options) withdraws every template of that kind.
func (s *Session) withdraw(ctx *Record, id uint16, options bool) {
	s.stats.Withdrawn++
	all := (!options && id == 2) || (options && id == 3)
	if !all {
		key := tkey{version: ctx.Version, id: id, domain: ctx.Domain}
		if t := s.templates[key]; t != nil && t.options == options {
			s.remove(key)
		}
		return
	}
	for key, t := range s.templates {
		if key.version == ctx.Version && key.domain == ctx.Domain && t.options == options {
			s.remove(key)
		}
	}
}

// expire removes templates older than the template expiry.
func (s *Session) expire(nowMs int64) {
	if s.lim.TemplateExpiry <= 0 {
		return
	}
	for key, t := range s.templates {
		if nowMs-t.seen > s.lim.TemplateExpiry.Milliseconds() {
			s.remove(key)
			s.stats.Expired++
		}
	}
}

// lookup returns the live template for key, expiring a stale one.
func (s *Session) lookup(key tkey, nowMs int64) *template {
	t := s.templates[key]
	if t != nil && s.lim.TemplateExpiry > 0 && nowMs-t.seen > s.lim.TemplateExpiry.Milliseconds() {
		s.remove(key)
		s.stats.Expired++
		return nil
	}
	return t
}

// domain returns the state of a domain, creating it when create is set.
// Domains without templates are dropped when the map grows past the
// template limit, so a flood of domain IDs cannot grow it without bound.
func (s *Session) domain(version uint16, id uint32, create bool) *domain {
	k := dkey{version, id}
	if d := s.domains[k]; d != nil || !create {
		return d
	}
	if len(s.domains) >= s.lim.MaxTemplates {
		for k, d := range s.domains {
			if d.templates <= 0 {
				delete(s.domains, k)
			}
		}
	}
	d := &domain{}
	s.domains[k] = d
	return d
}

// dataSet decodes a data or options data set.
func (s *Session) dataSet(ctx *Record, id uint16, body []byte, nowMs int64, out []Record) []Record {
	t := s.lookup(tkey{version: ctx.Version, id: id, domain: ctx.Domain}, nowMs)
	if t == nil {
		s.stats.Misses++
		s.buffer(ctx, id, body, nowMs)
		return out
	}
	return s.decodeSet(t, ctx, body, out)
}

// decodeSet decodes body with template t.
func (s *Session) decodeSet(t *template, ctx *Record, body []byte, out []Record) []Record {
	d := s.domain(ctx.Version, ctx.Domain, false)
	if t.options {
		// Options records update the domain instead of producing flows;
		// they are decoded one at a time into the session's scratch record.
		for len(body) >= t.minLen {
			s.opt = *ctx
			n, err := t.one(body, &s.opt)
			if err != nil {
				s.note(err)
				break
			}
			s.applyOptions(d, &s.opt)
			body = body[n:]
		}
		return out
	}
	n0 := len(out)
	out, err := t.decode(body, ctx, out)
	s.note(err)
	for i := n0; i < len(out); i++ {
		resolve(&out[i], d)
	}
	return out
}

// applyOptions records what an options data record announces.
func (s *Session) applyOptions(d *domain, o *Record) {
	if d == nil {
		return
	}
	if o.HasField(FieldSystemInit) {
		d.systemInitMs = o.SystemInit
	}
	rate := o.OwnRate()
	if rate == 0 {
		return
	}
	d.rate = rate
	if o.HasField(FieldSamplerID) {
		d.setSampler(o.SamplerID, false, rate, s.lim.MaxSamplers)
	}
	if o.HasField(FieldSelectorID) {
		d.setSampler(o.SelectorID, true, rate, s.lim.MaxSamplers)
	}
}

func (d *domain) setSampler(id uint64, selector bool, rate uint32, max int) {
	for i := range d.samplers {
		if d.samplers[i].id == id && d.samplers[i].selector == selector {
			d.samplers[i].rate = rate
			return
		}
	}
	if len(d.samplers) < max {
		d.samplers = append(d.samplers, sampler{id: id, selector: selector, rate: rate})
	}
}

func (d *domain) sampler(id uint64, selector bool) uint32 {
	for _, sm := range d.samplers {
		if sm.id == id && sm.selector == selector {
			return sm.rate
		}
	}
	return 0
}

// resolve fills the boot time and sampling rate of a data record from its
// own fields and its domain's options data.
func resolve(r *Record, d *domain) {
	if r.HasField(FieldSystemInit) {
		r.SystemInitMs = r.SystemInit
	} else if d != nil {
		r.SystemInitMs = d.systemInitMs
	}
	rate := r.OwnRate()
	if rate == 0 && d != nil {
		if r.HasField(FieldSamplerID) {
			rate = d.sampler(r.SamplerID, false)
		}
		if rate == 0 && r.HasField(FieldSelectorID) {
			rate = d.sampler(r.SelectorID, true)
		}
		if rate == 0 {
			rate = d.rate
		}
	}
	r.SamplingRate = rate
}
