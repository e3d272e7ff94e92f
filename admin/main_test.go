package admin_test

import (
	"testing"

	"github.com/credswap/credswap/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
