// Package natssdk publishes messages to NATS subjects chosen by the unit
// routing rules of the consuming service (docs/units.md): an
// sdk.MessagePublisher over a nats.go connection, for an sdk.UnitPublisher.
// It is a module of its own so that the core SDK does not depend on NATS.
//
//	pub := &sdk.UnitPublisher{Router: router, Service: "order-worker", Subject: "orders",
//		Broker: natssdk.Publisher{Conn: nc}}
//	subject, err := pub.Publish(map[string]string{"x-tenant-id": tenant}, body)
//
// A message whose tenant an enforced rule routes to unit c2 goes to
// orders.c2; the others go to orders. Consumers of a unit subscribe to its
// subject (a unit's consumers to orders.c2, the rest to orders).
package natssdk

import (
	"github.com/nats-io/nats.go"

	"github.com/sextant-mesh/sextant/sdk"
)

// Publisher publishes through a NATS connection; the message's header
// travels as NATS headers (the server must support them: NATS 2.2+).
type Publisher struct {
	Conn *nats.Conn
}

var _ sdk.MessagePublisher = Publisher{}

// PublishMessage implements sdk.MessagePublisher.
func (p Publisher) PublishMessage(subject string, header map[string]string, data []byte) error {
	m := nats.NewMsg(subject)
	for k, v := range header {
		m.Header.Set(k, v)
	}
	m.Data = data
	return p.Conn.PublishMsg(m)
}

// Features are the features unit rules match of a received message: its
// headers, for a consumer that routes further by the same rules.
func Features(m *nats.Msg) sdk.UnitFeatures {
	return sdk.UnitFeatures{Header: func(k string) string {
		if m.Header == nil {
			return ""
		}
		return m.Header.Get(k)
	}}
}
