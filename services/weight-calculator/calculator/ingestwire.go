package calculator

import (
	"context"
	"sync"

	"github.com/cloudwego/gopkg/protocol/thrift"
	"github.com/cloudwego/kitex/pkg/serviceinfo"
	"github.com/cloudwego/kitex/server"

	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
	aggregatorsvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator/aggregator"
)

// newIngestServer is aggregatorsvc.NewServer, except that Ingest reads its
// batch with ingestArgs: Kitex hands the decoder the connection's buffer,
// released once the call is decoded, so the batch's parts must be copied;
// the generated code copies them twice (gopkg's ReadBinary goes through a
// string) into a new slice per batch, the size of the batch. ingestArgs
// copies them once into a buffer reused from call to call.
func newIngestServer(h aggregator.Aggregator, opts ...server.Option) server.Server {
	svc := aggregatorsvc.NewServiceInfo()
	methods := make(map[string]serviceinfo.MethodInfo, len(svc.Methods))
	for name, m := range svc.Methods {
		methods[name] = m
	}
	m := svc.Methods["Ingest"]
	methods["Ingest"] = serviceinfo.NewMethodInfo(serveIngest,
		func() any { return &ingestArgs{} }, m.NewResult, m.OneWay(),
		serviceinfo.WithStreamingMode(serviceinfo.StreamingNone))
	svc.Methods = methods
	s := server.NewServer(append(opts, server.WithCompatibleMiddlewareForUnary())...)
	if err := s.RegisterService(svc, h); err != nil {
		panic(err) // a service registered twice: a programming error
	}
	return s
}

// serveIngest is the generated handler of Ingest, giving the parts' buffer
// back once the handler returns: nothing the store keeps points into it
// (names are cloned, reportbatch.Reader's strings live for one part).
func serveIngest(ctx context.Context, handler, arg, result any) error {
	a := arg.(*ingestArgs)
	defer a.release()
	res := result.(*aggregator.AggregatorIngestResult)
	resp, err := handler.(aggregator.Aggregator).Ingest(ctx, a.Batch)
	if err != nil {
		if e, ok := err.(*aggregator.IngestError); ok {
			res.Err = e
			return nil
		}
		return err
	}
	res.Success = resp
	return nil
}

var errPartsLength = thrift.NewProtocolException(thrift.INVALID_DATA, "parts: length beyond the message")

// partsBuffers holds the buffers parts are copied into.
var partsBuffers = sync.Pool{New: func() any { return new([]byte) }}

// maxKeptPartsBuffer bounds a buffer kept for another batch.
const maxKeptPartsBuffer = 4 << 20

// ingestArgs is Aggregator.Ingest's argument, read as the generated code
// reads it except for the batch's parts (field 6).
type ingestArgs struct {
	aggregator.AggregatorIngestArgs
	batch aggregator.ReportBatch
	parts *[]byte // from partsBuffers, until release
}

var _ thrift.FastCodec = (*ingestArgs)(nil)

// FastRead reads the arguments struct: field 1 is the batch.
func (a *ingestArgs) FastRead(buf []byte) (int, error) {
	return readStruct(buf, func(t thrift.TType, id int16, buf []byte) (int, error) {
		if id == 1 && t == thrift.STRUCT {
			a.batch = aggregator.ReportBatch{}
			a.Batch = &a.batch
			return a.readBatch(buf)
		}
		return thrift.Binary.Skip(buf, t)
	})
}

func (a *ingestArgs) readBatch(buf []byte) (int, error) {
	b := &a.batch
	return readStruct(buf, func(t thrift.TType, id int16, buf []byte) (int, error) {
		switch {
		case id == 1 && t == thrift.STRING:
			return b.FastReadField1(buf)
		case id == 2 && t == thrift.I64:
			return b.FastReadField2(buf)
		case id == 3 && t == thrift.LIST:
			return b.FastReadField3(buf)
		case id == 4 && t == thrift.LIST:
			return b.FastReadField4(buf)
		case id == 5 && t == thrift.LIST:
			return b.FastReadField5(buf)
		case id == 6 && t == thrift.STRING:
			return a.readParts(buf)
		case id == 7 && t == thrift.I32:
			return b.FastReadField7(buf)
		}
		return thrift.Binary.Skip(buf, t)
	})
}

func (a *ingestArgs) readParts(buf []byte) (int, error) {
	n, l, err := thrift.Binary.ReadI32(buf)
	if err != nil {
		return l, err
	}
	if n < 0 || int(n) > len(buf)-l {
		return l, errPartsLength
	}
	if a.parts == nil {
		a.parts = partsBuffers.Get().(*[]byte)
	}
	*a.parts = append((*a.parts)[:0], buf[l:l+int(n)]...)
	a.batch.Parts = *a.parts
	return l + int(n), nil
}

// release gives the parts' buffer back; the batch holds no parts after.
func (a *ingestArgs) release() {
	a.batch.Parts = nil
	if a.parts != nil && cap(*a.parts) <= maxKeptPartsBuffer {
		partsBuffers.Put(a.parts)
	}
	a.parts = nil
}

// readStruct reads a struct's fields up to its stop, handing each to field,
// which returns how many bytes the field's value took.
func readStruct(buf []byte, field func(t thrift.TType, id int16, buf []byte) (int, error)) (int, error) {
	offset := 0
	for {
		t, id, l, err := thrift.Binary.ReadFieldBegin(buf[offset:])
		offset += l
		if err != nil {
			return offset, err
		}
		if t == thrift.STOP {
			return offset, nil
		}
		l, err = field(t, id, buf[offset:])
		offset += l
		if err != nil {
			return offset, err
		}
	}
}
