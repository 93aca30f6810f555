module profstore/gotarget

go 1.19
