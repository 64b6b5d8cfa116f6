module uvctx.example/bench/peers/go

go 1.19
