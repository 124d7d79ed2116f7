module github.com/sextant-mesh/sextant/api

go 1.26.0
