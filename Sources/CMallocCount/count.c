// count
