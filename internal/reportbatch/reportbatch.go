// Package reportbatch is the wire form of what a telemetry-mixer sends a
// weight-calculator shard: for each report, a ReportPart (idl/aggregator.thrift)
// holding the reporter and the window once and the records the shard owns.
//
// The mixer appends a report's parts to the bytes it holds for each shard
// when it routes the report (AppendPart), and sends those bytes as they are;
// the calculator reads them back without copying (Reader). The load-balancing
// simulator feeds the calculator's core the same bytes (Batch), so what it
// measures is what the calculator is fed in production.
package reportbatch

import (
	"errors"
	"unsafe"

	"github.com/cloudwego/gopkg/protocol/thrift"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
)

var bin = thrift.Binary

// Owners says which shard (by index) owns each record of a report, in the
// order of Records: the server part (its slot is there even without one),
// then the calls, then the denials, then the unit routes.
type Owners []int32

// Route fills o for r with owner(key) of every record and returns it.
func (o Owners) Route(r *api.Report, owner func(service string) int32) Owners {
	o = o[:0]
	o = append(o, owner(r.Reporter.Service))
	for i := range r.Calls {
		o = append(o, owner(r.Calls[i].CalleeService))
	}
	for i := range r.DryRunDenials {
		o = append(o, owner(r.DryRunDenials[i].CalleeService))
	}
	for i := range r.UnitRoutes {
		o = append(o, owner(r.UnitRoutes[i].CalleeService))
	}
	return o
}

// Counts of the records a part holds, by kind.
type Counts struct{ Servers, Edges, Denials, Units int }

// Records is how many records the counts make.
func (c Counts) Records() int { return c.Servers + c.Edges + c.Denials + c.Units }

// Add sums two counts.
func (c Counts) Add(o Counts) Counts {
	return Counts{c.Servers + o.Servers, c.Edges + o.Edges, c.Denials + o.Denials, c.Units + o.Units}
}

// AppendPart appends to buf the ReportPart of r for shard self: the records
// owners gives to self (owners nil: every record). It returns what it added;
// nothing when self owns no record of r.
func AppendPart(buf []byte, r *api.Report, owners Owners, self int32) ([]byte, Counts) {
	mine := func(i int) bool { return owners == nil || owners[i] == self }
	var n Counts
	server := r.Server != nil && mine(0)
	if server {
		n.Servers = 1
	}
	for i := range r.Calls {
		if mine(1 + i) {
			n.Edges++
		}
	}
	for i := range r.DryRunDenials {
		if mine(1 + len(r.Calls) + i) {
			n.Denials++
		}
	}
	units := 1 + len(r.Calls) + len(r.DryRunDenials)
	for i := range r.UnitRoutes {
		if mine(units + i) {
			n.Units++
		}
	}
	if n.Records() == 0 {
		return buf, n
	}
	rep := r.Reporter
	buf = bin.AppendFieldBegin(buf, thrift.STRUCT, 1)
	buf = appendStringField(buf, 1, rep.Service)
	buf = appendStringField(buf, 2, rep.Instance)
	buf = appendStringField(buf, 3, rep.Cluster)
	buf = appendStringField(buf, 4, rep.Zone)
	buf = bin.AppendFieldStop(buf)
	buf = appendI64Field(buf, 2, r.WindowMs)
	buf = appendI64Field(buf, 3, r.TimestampMs)
	if server {
		s := r.Server
		buf = bin.AppendFieldBegin(buf, thrift.STRUCT, 4)
		buf = appendI64Field(buf, 1, s.Requests)
		buf = appendDoubleField(buf, 2, s.CPUUtil)
		buf = appendDoubleField(buf, 3, s.QueueTimeMsAvg)
		buf = appendDoubleField(buf, 4, s.QueueTimeMsP99)
		buf = appendI64Field(buf, 5, s.Inflight)
		buf = appendI64Field(buf, 6, s.ClientTimeouts)
		buf = appendLevels(buf, 7, s.RequestsByPriority)
		buf = appendLevels(buf, 8, s.RequestsByLevel)
		buf = bin.AppendFieldStop(buf)
	}
	buf = bin.AppendFieldBegin(buf, thrift.LIST, 5)
	buf = bin.AppendListBegin(buf, thrift.STRUCT, n.Edges)
	for i := range r.Calls {
		if !mine(1 + i) {
			continue
		}
		c := &r.Calls[i]
		buf = appendStringField(buf, 1, c.CalleeService)
		buf = appendStringField(buf, 2, c.CalleeInstance)
		buf = appendI64Field(buf, 3, c.Requests)
		buf = appendI64Field(buf, 4, c.Errors)
		buf = appendI64Field(buf, 5, c.Timeouts)
		buf = appendDoubleField(buf, 6, c.LatencyMsAvg)
		buf = appendDoubleField(buf, 7, c.LatencyMsP99)
		buf = bin.AppendFieldStop(buf)
	}
	buf = bin.AppendFieldBegin(buf, thrift.LIST, 6)
	buf = bin.AppendListBegin(buf, thrift.STRUCT, n.Denials)
	for i := range r.DryRunDenials {
		if !mine(1 + len(r.Calls) + i) {
			continue
		}
		d := &r.DryRunDenials[i]
		buf = appendStringField(buf, 1, d.CalleeService)
		buf = appendStringField(buf, 2, d.CallerService)
		buf = appendStringField(buf, 3, d.Rule)
		buf = appendI64Field(buf, 4, d.Count)
		buf = bin.AppendFieldStop(buf)
	}
	if n.Units > 0 { // absent when empty: the parts of older mixers
		buf = bin.AppendFieldBegin(buf, thrift.LIST, 7)
		buf = bin.AppendListBegin(buf, thrift.STRUCT, n.Units)
		for i := range r.UnitRoutes {
			if !mine(units + i) {
				continue
			}
			u := &r.UnitRoutes[i]
			buf = appendStringField(buf, 1, u.CalleeService)
			buf = appendStringField(buf, 2, u.Rule)
			buf = appendStringField(buf, 3, u.Unit)
			buf = appendStringField(buf, 4, u.Outcome)
			buf = appendI64Field(buf, 5, u.Count)
			buf = bin.AppendFieldStop(buf)
		}
	}
	return bin.AppendFieldStop(buf), n
}

func appendStringField(buf []byte, id int16, v string) []byte {
	return bin.AppendString(bin.AppendFieldBegin(buf, thrift.STRING, id), v)
}

func appendI64Field(buf []byte, id int16, v int64) []byte {
	return bin.AppendI64(bin.AppendFieldBegin(buf, thrift.I64, id), v)
}

func appendDoubleField(buf []byte, id int16, v float64) []byte {
	return bin.AppendDouble(bin.AppendFieldBegin(buf, thrift.DOUBLE, id), v)
}

func appendLevels(buf []byte, id int16, m map[int32]int64) []byte {
	if len(m) == 0 {
		return buf
	}
	buf = bin.AppendFieldBegin(buf, thrift.MAP, id)
	buf = bin.AppendMapBegin(buf, thrift.I32, thrift.I64, len(m))
	for k, v := range m {
		buf = bin.AppendI64(bin.AppendI32(buf, k), v)
	}
	return buf
}

// Batch is reports as one shard that owns all their records receives them.
func Batch(reports ...*api.Report) *aggregator.ReportBatch {
	b := &aggregator.ReportBatch{}
	for _, r := range reports {
		var n Counts
		b.Parts, n = AppendPart(b.Parts, r, nil, 0)
		if n.Records() > 0 {
			b.PartCount++
		}
	}
	return b
}

// ErrMalformed: the parts are not what AppendPart writes.
var ErrMalformed = errors.New("malformed report parts")

// Reader reads parts back into one api.Report it reuses. The strings of the
// report it returns point into the bytes read: they are valid as long as
// those bytes are, and are copied by whoever keeps them.
type Reader struct {
	buf    []byte
	left   int
	report api.Report
	rep    api.Reporter
	server api.ServerStats
	byPrio map[int32]int64
	byLvl  map[int32]int64
}

// Reset starts reading count parts from buf.
func (rd *Reader) Reset(buf []byte, count int) {
	rd.buf, rd.left = buf, count
}

// Next returns the next part, nil at the end. The report is valid until the
// next call.
func (rd *Reader) Next() (*api.Report, error) {
	if rd.left <= 0 {
		if len(rd.buf) > 0 {
			return nil, ErrMalformed
		}
		return nil, nil
	}
	rd.left--
	r := &rd.report
	calls, denials, units := r.Calls[:0], r.DryRunDenials[:0], r.UnitRoutes[:0]
	*r = api.Report{Reporter: &rd.rep}
	rd.rep = api.Reporter{}
	p := parser{buf: rd.buf}
	for {
		t, id := p.field()
		if t == thrift.STOP || p.err != nil {
			break
		}
		switch {
		case id == 1 && t == thrift.STRUCT:
			p.structFields(func(t thrift.TType, id int16) bool {
				switch {
				case id == 1 && t == thrift.STRING:
					rd.rep.Service = p.str()
				case id == 2 && t == thrift.STRING:
					rd.rep.Instance = p.str()
				case id == 3 && t == thrift.STRING:
					rd.rep.Cluster = p.str()
				case id == 4 && t == thrift.STRING:
					rd.rep.Zone = p.str()
				default:
					return false
				}
				return true
			})
		case id == 2 && t == thrift.I64:
			r.WindowMs = p.i64()
		case id == 3 && t == thrift.I64:
			r.TimestampMs = p.i64()
		case id == 4 && t == thrift.STRUCT:
			rd.readServer(&p)
			r.Server = &rd.server
		case id == 5 && t == thrift.LIST:
			n := p.list()
			for range n {
				var c api.Call
				p.structFields(func(t thrift.TType, id int16) bool {
					switch {
					case id == 1 && t == thrift.STRING:
						c.CalleeService = p.str()
					case id == 2 && t == thrift.STRING:
						c.CalleeInstance = p.str()
					case id == 3 && t == thrift.I64:
						c.Requests = p.i64()
					case id == 4 && t == thrift.I64:
						c.Errors = p.i64()
					case id == 5 && t == thrift.I64:
						c.Timeouts = p.i64()
					case id == 6 && t == thrift.DOUBLE:
						c.LatencyMsAvg = p.double()
					case id == 7 && t == thrift.DOUBLE:
						c.LatencyMsP99 = p.double()
					default:
						return false
					}
					return true
				})
				calls = append(calls, c)
			}
		case id == 6 && t == thrift.LIST:
			n := p.list()
			for range n {
				var d api.DryRunDenial
				p.structFields(func(t thrift.TType, id int16) bool {
					switch {
					case id == 1 && t == thrift.STRING:
						d.CalleeService = p.str()
					case id == 2 && t == thrift.STRING:
						d.CallerService = p.str()
					case id == 3 && t == thrift.STRING:
						d.Rule = p.str()
					case id == 4 && t == thrift.I64:
						d.Count = p.i64()
					default:
						return false
					}
					return true
				})
				denials = append(denials, d)
			}
		case id == 7 && t == thrift.LIST:
			n := p.list()
			for range n {
				var u api.UnitRoute
				p.structFields(func(t thrift.TType, id int16) bool {
					switch {
					case id == 1 && t == thrift.STRING:
						u.CalleeService = p.str()
					case id == 2 && t == thrift.STRING:
						u.Rule = p.str()
					case id == 3 && t == thrift.STRING:
						u.Unit = p.str()
					case id == 4 && t == thrift.STRING:
						u.Outcome = p.str()
					case id == 5 && t == thrift.I64:
						u.Count = p.i64()
					default:
						return false
					}
					return true
				})
				units = append(units, u)
			}
		default:
			p.skip(t)
		}
	}
	if p.err != nil {
		rd.left, rd.buf = 0, nil
		return nil, p.err
	}
	rd.buf = p.buf
	r.Calls, r.DryRunDenials, r.UnitRoutes = calls, denials, units
	return r, nil
}

func (rd *Reader) readServer(p *parser) {
	if rd.byPrio == nil {
		rd.byPrio, rd.byLvl = map[int32]int64{}, map[int32]int64{}
	}
	clear(rd.byPrio)
	clear(rd.byLvl)
	rd.server = api.ServerStats{}
	s := &rd.server
	p.structFields(func(t thrift.TType, id int16) bool {
		switch {
		case id == 1 && t == thrift.I64:
			s.Requests = p.i64()
		case id == 2 && t == thrift.DOUBLE:
			s.CPUUtil = p.double()
		case id == 3 && t == thrift.DOUBLE:
			s.QueueTimeMsAvg = p.double()
		case id == 4 && t == thrift.DOUBLE:
			s.QueueTimeMsP99 = p.double()
		case id == 5 && t == thrift.I64:
			s.Inflight = p.i64()
		case id == 6 && t == thrift.I64:
			s.ClientTimeouts = p.i64()
		case id == 7 && t == thrift.MAP:
			p.levels(rd.byPrio)
			s.RequestsByPriority = rd.byPrio
		case id == 8 && t == thrift.MAP:
			p.levels(rd.byLvl)
			s.RequestsByLevel = rd.byLvl
		default:
			return false
		}
		return true
	})
}

// parser reads the Thrift binary protocol from buf, remembering the first error.
type parser struct {
	buf []byte
	err error
}

func (p *parser) fail(err error) {
	if p.err == nil {
		p.err = err
	}
	p.buf = nil
}

func (p *parser) field() (thrift.TType, int16) {
	if p.err != nil {
		return thrift.STOP, 0
	}
	t, id, l, err := bin.ReadFieldBegin(p.buf)
	if err != nil {
		p.fail(err)
		return thrift.STOP, 0
	}
	p.buf = p.buf[l:]
	return t, id
}

// structFields reads a struct's fields, handing each to read; a field read
// does not know is skipped.
func (p *parser) structFields(read func(thrift.TType, int16) bool) {
	for {
		t, id := p.field()
		if t == thrift.STOP || p.err != nil {
			return
		}
		if !read(t, id) {
			p.skip(t)
		}
	}
}

func (p *parser) skip(t thrift.TType) {
	l, err := bin.Skip(p.buf, t)
	if err != nil {
		p.fail(err)
		return
	}
	p.buf = p.buf[l:]
}

// str is a string that points into the bytes read.
func (p *parser) str() string {
	if p.err != nil {
		return ""
	}
	n, _, err := bin.ReadI32(p.buf)
	if err != nil || n < 0 || int(n) > len(p.buf)-4 {
		p.fail(ErrMalformed)
		return ""
	}
	s := p.buf[4 : 4+n]
	p.buf = p.buf[4+n:]
	return unsafe.String(unsafe.SliceData(s), len(s))
}

func (p *parser) i64() int64 {
	v, l, err := bin.ReadI64(p.buf)
	if err != nil {
		p.fail(err)
		return 0
	}
	p.buf = p.buf[l:]
	return v
}

func (p *parser) i32() int32 {
	v, l, err := bin.ReadI32(p.buf)
	if err != nil {
		p.fail(err)
		return 0
	}
	p.buf = p.buf[l:]
	return v
}

func (p *parser) double() float64 {
	v, l, err := bin.ReadDouble(p.buf)
	if err != nil {
		p.fail(err)
		return 0
	}
	p.buf = p.buf[l:]
	return v
}

// list reads a list of structs' header and returns its length.
func (p *parser) list() int {
	if p.err != nil {
		return 0
	}
	et, n, l, err := bin.ReadListBegin(p.buf)
	if err != nil || et != thrift.STRUCT || n < 0 || n > len(p.buf) {
		p.fail(ErrMalformed)
		return 0
	}
	p.buf = p.buf[l:]
	return n
}

func (p *parser) levels(into map[int32]int64) {
	if p.err != nil {
		return
	}
	kt, vt, n, l, err := bin.ReadMapBegin(p.buf)
	if err != nil || kt != thrift.I32 || vt != thrift.I64 || n < 0 || n*12 > len(p.buf)-l {
		p.fail(ErrMalformed)
		return
	}
	p.buf = p.buf[l:]
	for range n {
		k := p.i32()
		into[k] += p.i64()
	}
}
