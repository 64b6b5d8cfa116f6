// The Go peer of bench/bench_pool.c: database/sql's pool with a fake
// driver whose connections do nothing, so that what is measured is the
// pool: db.Conn(ctx) takes the idle connection and Conn.Close() gives it
// back. Standard library only, no network.
package peer

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"testing"
)

type fakeDriver struct{}
type fakeConn struct{}

func (fakeDriver) Open(string) (driver.Conn, error) { return fakeConn{}, nil }

func (fakeConn) Prepare(string) (driver.Stmt, error) {
	return nil, errors.New("fake: no statements")
}
func (fakeConn) Close() error              { return nil }
func (fakeConn) Begin() (driver.Tx, error) { return nil, errors.New("fake: no transactions") }

func init() { sql.Register("uvctx-fake", fakeDriver{}) }

// pool_acquire_release: one requester, an idle connection each time.
func BenchmarkPoolAcquireRelease(b *testing.B) {
	db, err := sql.Open("uvctx-fake", "")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(10)
	db.SetMaxIdleConns(10)
	ctx := context.Background()
	c, err := db.Conn(ctx) // warm: one idle connection
	if err != nil {
		b.Fatal(err)
	}
	c.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := db.Conn(ctx)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
