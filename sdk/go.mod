module github.com/sextant-mesh/sextant/sdk

go 1.26.0

require github.com/sextant-mesh/sextant/api v0.0.0

replace github.com/sextant-mesh/sextant/api => ../api
